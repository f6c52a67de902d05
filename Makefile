# Makefile for the saga extension (PGXS)

EXTENSION = saga
MODULE_big = saga
OBJS = \
	src/saga.o \
	src/shmem.o \
	src/launcher.o \
	src/worker.o \
	src/dispatch.o \
	src/invoke.o \
	src/batch.o \
	src/definition.o \
	src/steps.o \
	src/abort.o \
	src/admin.o \
	src/stats.o \
	src/retention.o \
	src/publish.o \
	src/grants.o \
	src/labels.o \
	src/end_notify.o \
	src/instance.o \
	src/wakeup.o \
	src/lifecycle.o \
	src/utility.o \
	src/spi_util.o \
	src/replica.o
# The install and upgrade scripts are made from two sources each: the
# engine's (schema/engine) and, after it, the example order shop's
# (schema/example).  See schema/README.md.
DATA_built = saga--1.0.sql saga--1.0--1.1.sql saga--1.1--1.2.sql
PGFILEDESC = "saga - sagas inside PostgreSQL"

PG_CPPFLAGS = -I$(srcdir)/src

# Suites driven by saga_run_pending(), in a cluster without the library
# preloaded (so no worker competes with the test, and that mode is tested).
REGRESS = choreography orchestration failures operations bad_input subscriptions security promises await ownership mermaid checker deferred labels app_roles
REGRESS_OPTS = --temp-instance=tmp_check_regress --temp-config=$(srcdir)/test/no_preload.conf

# Suites that run through the background workers.
REGRESS_WORKERS = workers
REGRESS_WORKERS_OPTS = --dbname=saga_workers_regression --temp-instance=tmp_check_workers --temp-config=$(srcdir)/test/preload.conf

# Concurrency specs: sessions calling saga_run_pending() stand for workers
# (the same claim-and-dispatch code), so that the interleavings are exact.
ISOLATION = race_last_unit race_balance claim_skip_locked sweep_tied_deadlines abort_race end_notify
ISOLATION_OPTS = --temp-instance=tmp_check_isolation --temp-config=$(srcdir)/test/no_preload.conf

TAP_TESTS = 1

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object depends on the shared headers (PGXS does not track headers)
$(OBJS): $(wildcard $(srcdir)/src/*.h)

saga--%.sql: schema/engine/%.sql schema/example/%.sql
	cat $^ > $@

installcheck: installcheck-workers

installcheck-workers: submake
	$(pg_regress_installcheck) $(REGRESS_WORKERS_OPTS) $(REGRESS_WORKERS)

.PHONY: installcheck-workers
