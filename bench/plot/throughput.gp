# bench/plot/throughput.gp: throughput.png from throughput.dat (in the
# current directory): clients, then median min max of
# insert, order_once, order_chain, choreography, orchestration.
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
    set terminal pngcairo size 1000,650 enhanced font "sans,10"
} else {
    set terminal png size 1000,650
}
set output "throughput.png"
set title "Throughput vs clients (median of the repetitions, bars: min-max; points nudged sideways)"
set xlabel "pgbench clients"
set ylabel "per second (log scale)"
set logscale x 2
set logscale y 10
stats "throughput.dat" using 1 nooutput
set xrange [STATS_min * 0.8 : STATS_max * 1.25]
set xtics (1, 2, 4, 8, 16, 32, 64)
set grid ytics mytics xtics
set key outside right top noenhanced
set offsets graph 0.05, graph 0.08, 0, 0
plot "throughput.dat" using ($1*0.96):2:3:4 with yerrorlines lw 2 pt 7 title "(a) 1-row INSERT, tx/s", \
     ""               using ($1*0.98):5:6:7 with yerrorlines lw 2 pt 5 title "(b) order in 1 tx, orders/s", \
     ""               using 1:8:9:10 with yerrorlines lw 2 pt 9 title "(c) order in 4 tx, orders/s", \
     ""               using ($1*1.02):11:12:13 with yerrorlines lw 3 pt 11 title "choreography, sagas/s", \
     ""               using ($1*1.04):14:15:16 with yerrorlines lw 3 pt 13 title "orchestration, sagas/s"
