/* Prints the replication status of a PostgreSQL cluster and runs one read through the read
 * routing. The nodes come from ROOTSTREAM_HA_PG_NODES (name=url,...), e.g. inside
 * `scripts/stack.sh run --pg-ha -- build/examples/ha_replication_c`. */
#include "rootstream_db.h"

#include <stdio.h>
#include <stdlib.h>

static int fail(const char *what, int rc) {
    fprintf(stderr, "%s failed: %s (%s)\n", what, rsdb_last_error(), rsdb_status_name(rc));
    return 1;
}

int main(void) {
    if (getenv("ROOTSTREAM_HA_PG_NODES") == NULL) {
        fprintf(stderr, "set ROOTSTREAM_HA_PG_NODES (name=postgres://...,...) first\n");
        return 2;
    }
    rsdb_config *cfg = NULL;
    int rc = rsdb_config_new(&cfg);
    if (rc != RSDB_OK) return fail("rsdb_config_new", rc);

    rsdb_replication *repl = NULL;
    rc = rsdb_replication_open(cfg, NULL, NULL, "{\"probe_timeout_ms\": 2000, \"max_lag_bytes\": 1048576}", &repl);
    if (rc != RSDB_OK) {
        rsdb_config_free(cfg);
        return fail("rsdb_replication_open", rc);
    }

    char *status = NULL;
    rc = rsdb_replication_status_json(repl, &status);
    if (rc == RSDB_OK) {
        printf("status: %s\n", status);
        rsdb_string_free(status);
    } else {
        fail("rsdb_replication_status_json", rc);
    }

    char *rows = NULL;
    rc = rsdb_replication_query_read_json(repl, "SELECT pg_is_in_recovery() AS standby, now() AS at", NULL, &rows);
    if (rc == RSDB_OK) {
        printf("read: %s\n", rows);
        rsdb_string_free(rows);
    } else {
        fail("rsdb_replication_query_read_json", rc);
    }

    rsdb_replication_close(repl);
    rsdb_config_free(cfg);
    return rc == RSDB_OK ? 0 : 1;
}
