/* Links against RootStream::db and makes one round trip to the configured database. */
#include <rootstream_db.h>

#include <stdio.h>

int main(void) {
    rsdb_config *cfg = NULL;
    rsdb_db *db = NULL;
    char *rows = NULL;
    printf("rootstream-db %s\n", rsdb_version());
    if (rsdb_config_from_env(&cfg) != RSDB_OK) goto fail;
    if (rsdb_db_open(cfg, &db) != RSDB_OK) goto fail;
    if (rsdb_db_query(db, "SELECT $1::text AS hello", "[\"from C\"]", &rows) != RSDB_OK) goto fail;
    printf("%s\n", rows);
    rsdb_string_free(rows);
    rsdb_db_close(db);
    rsdb_config_free(cfg);
    return 0;
fail:
    fprintf(stderr, "c_consumer: %s\n", rsdb_last_error());
    rsdb_db_close(db);
    rsdb_config_free(cfg);
    return 1;
}
