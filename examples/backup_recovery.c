/*
 * Backup and recovery through the C API: prepare the repository, take a logical backup and a
 * physical one, add an incremental, verify, recover the cluster to a moment between two commits
 * into a new data directory, check what came back, and test-restore a backup in scratch space.
 *
 * Usage: backup_recovery_c [CONFIG-FILE]
 * Configuration comes from the ROOTSTREAM_* variables, then CONFIG-FILE (`key = value` lines,
 * the file PostgreSQL's archive_command `rsdb --config CONFIG-FILE wal-push %p` uses). It needs
 * database_url, master_key, a repository (backup_dir or backup_s3_url) and rsdb_path; the
 * cluster must archive its WAL into the same repository (scripts/demo.sh sets this up).
 */
#include "rootstream_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fail(const char *what) {
    fprintf(stderr, "backup_recovery_c: %s failed: %s (%s)\n", what,
            rsdb_last_error() ? rsdb_last_error() : "?", rsdb_status_name(rsdb_last_error_code()));
    return 1;
}

#define CHECK(call, what)      \
    do {                       \
        if ((call) != RSDB_OK) \
            return fail(what); \
    } while (0)

static void on_progress(void *user_data, const char *json) {
    (void)user_data;
    printf("  progress: %s\n", json);
}

/* Copies the string value of "key" from a flat JSON text (enough for the ids printed here). */
static void json_field(const char *json, const char *key, char *out, size_t cap) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *p = strstr(json, pattern);
    out[0] = '\0';
    if (!p)
        return;
    p += strlen(pattern);
    size_t n = 0;
    while (p[n] && p[n] != '"' && n + 1 < cap)
        n++;
    memcpy(out, p, n);
    out[n] = '\0';
}

static int exec(rsdb_db *db, const char *sql) {
    return rsdb_db_execute(db, sql, "[]", NULL);
}

static int run(rsdb_config *cfg) {
    rsdb_db *db = NULL;
    rsdb_backup *backups = NULL;
    rsdb_recovery *recovery = NULL;
    char *json = NULL;
    char full_id[128], incr_id[128], logical_id[128], moment[64], options[1024], data_dir[256];

    CHECK(rsdb_db_open(cfg, &db), "open");
    CHECK(rsdb_db_migrate(db, NULL), "migrate");
    CHECK(rsdb_backup_new(cfg, db, &backups), "backup handle");
    CHECK(rsdb_backup_init_repository(backups), "init repository");
    CHECK(exec(db, "DROP TABLE IF EXISTS example_ledger"), "drop");
    CHECK(exec(db, "CREATE TABLE example_ledger (id INT PRIMARY KEY, note TEXT)"), "create table");
    CHECK(exec(db, "INSERT INTO example_ledger VALUES (1, 'before the full backup')"), "insert 1");

    printf("logical backup (pg_dump of the database):\n");
    CHECK(rsdb_backup_create(backups, "logical", &json), "logical backup");
    json_field(json, "backup_id", logical_id, sizeof logical_id);
    rsdb_string_free(json);
    printf("  %s\n", logical_id);

    printf("physical full backup (the whole cluster):\n");
    CHECK(rsdb_backup_create(backups, "full", &json), "full backup");
    json_field(json, "backup_id", full_id, sizeof full_id);
    rsdb_string_free(json);
    printf("  %s\n", full_id);

    CHECK(exec(db, "INSERT INTO example_ledger VALUES (2, 'kept by the recovery')"), "insert 2");
    CHECK(rsdb_db_query(db, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                            "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS t", "[]", &json), "clock");
    json_field(json, "t", moment, sizeof moment);
    rsdb_string_free(json);
    printf("the moment to recover to: %s\n", moment);
    struct timespec pause = {1, 100000000L};
    nanosleep(&pause, NULL);
    CHECK(exec(db, "INSERT INTO example_ledger VALUES (3, 'after the moment: not recovered')"), "insert 3");

    printf("incremental backup (the WAL since the full one):\n");
    CHECK(rsdb_backup_create(backups, "incremental", &json), "incremental backup");
    json_field(json, "backup_id", incr_id, sizeof incr_id);
    rsdb_string_free(json);
    printf("  %s\n", incr_id);
    CHECK(rsdb_backup_verify(backups, incr_id, NULL), "verify");
    printf("verified %s: every chunk authentic\n", incr_id);
    /* WAL that a full queue (wal_queue_max) dropped would show here, with the backups whose
       point-in-time recovery it stops; the archive of this example has dropped nothing. */
    CHECK(rsdb_backup_wal_gaps(backups, &json), "WAL gaps");
    printf("WAL gaps: %s\n", json);
    rsdb_string_free(json);

    /* Recovery works from the repository alone: no database handle. */
    CHECK(rsdb_recovery_new(cfg, NULL, &recovery), "recovery handle");
    CHECK(rsdb_recovery_set_progress(recovery, on_progress, NULL), "progress");
    snprintf(data_dir, sizeof data_dir, "/tmp/rsdb-example-pitr-%ld", (long)time(NULL));
    snprintf(options, sizeof options,
             "{\"data_dir\":\"%s\",\"backup_id\":\"%s\",\"target_time\":\"%s\",\"keep_running\":true}",
             data_dir, full_id, moment);
    printf("point-in-time recovery into %s:\n", data_dir);
    CHECK(rsdb_recovery_restore_cluster(recovery, options, &json), "restore to a point in time");
    printf("  report: %s\n", json);
    char port[16] = "";
    const char *p = strstr(json, "\"port\":");
    if (p)
        snprintf(port, sizeof port, "%d", atoi(p + 7));
    rsdb_string_free(json);

    /* Look at what came back: the same database name on the restored server. */
    char *url = NULL;
    CHECK(rsdb_db_query(db, "SELECT current_database() AS d", "[]", &json), "database name");
    char dbname[128];
    json_field(json, "d", dbname, sizeof dbname);
    rsdb_string_free(json);
    size_t url_len = strlen(dbname) + strlen(port) + 64;
    url = malloc(url_len);
    snprintf(url, url_len, "postgresql://postgres@127.0.0.1:%s/%s", port, dbname);
    rsdb_config *restored_cfg = NULL;
    rsdb_db *restored = NULL;
    int rc = rsdb_config_new(&restored_cfg);
    if (rc == RSDB_OK)
        rc = rsdb_config_set(restored_cfg, "database_url", url);
    if (rc == RSDB_OK)
        rc = rsdb_db_open(restored_cfg, &restored);
    if (rc == RSDB_OK)
        rc = rsdb_db_query(restored, "SELECT id, note FROM example_ledger ORDER BY id", "[]", &json);
    free(url);
    if (rc != RSDB_OK)
        return fail("query the restored server");
    printf("  rows in the recovered cluster: %s\n", json);
    int ok = strstr(json, "\"id\":1") && strstr(json, "\"id\":2") && !strstr(json, "\"id\":3");
    rsdb_string_free(json);
    rsdb_db_close(restored);
    rsdb_config_free(restored_cfg);
    CHECK(rsdb_recovery_stop_cluster(recovery, data_dir), "stop the restored server");
    if (!ok) {
        fprintf(stderr, "backup_recovery_c: the recovered rows are not the expected 1 and 2\n");
        return 1;
    }
    printf("  rows 1 and 2 are back, row 3 (committed after the moment) is not\n");
    char rm_cmd[320];
    snprintf(rm_cmd, sizeof rm_cmd, "rm -rf '%s'", data_dir);
    if (system(rm_cmd) != 0)
        fprintf(stderr, "could not remove %s\n", data_dir);

    rsdb_recovery_free(recovery);
    CHECK(rsdb_recovery_new(cfg, db, &recovery), "recovery handle with the database");
    CHECK(rsdb_recovery_test_restore(recovery, logical_id, &json), "test restore");
    printf("test restore of %s: %s\n", logical_id, json);
    rsdb_string_free(json);

    CHECK(rsdb_backup_list(backups, &json), "list");
    printf("backup history: %.300s...\n", json);
    rsdb_string_free(json);

    rsdb_recovery_free(recovery);
    rsdb_backup_free(backups);
    rsdb_db_close(db);
    return 0;
}

int main(int argc, char **argv) {
    rsdb_config *cfg = NULL;
    if (rsdb_config_from_env(&cfg) != RSDB_OK)
        return fail("configuration");
    if (argc > 1 && rsdb_config_load_file(cfg, argv[1]) != RSDB_OK) {
        rsdb_config_free(cfg);
        return fail("configuration file");
    }
    int rc = run(cfg);
    rsdb_config_free(cfg);
    if (rc == 0)
        printf("backup_recovery_c: done\n");
    return rc;
}
