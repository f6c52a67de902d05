# bench/plot/latency.gp: latency.png from latency.dat (in the current
# directory): a header line, then p50, p95, p99, max in ms per pattern.
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
    set terminal pngcairo size 900,600 enhanced font "sans,10"
} else {
    set terminal png size 900,600
}
set output "latency.png"
set title "Saga latency at half the best throughput (finished_at - started_at)" noenhanced
set ylabel "milliseconds (log scale)"
set logscale y 10
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics mytics
set key top left noenhanced
set yrange [*:*]
plot "latency.dat" using 2:xtic(1) title columnheader(2), \
     ""            using 3 title columnheader(3)
