// Links against RootStream::db_cxx and makes one round trip to the configured database.
#include <rootstream/rootstream_db.hpp>

#include <iostream>

int main() {
    try {
        rootstream::database::DatabaseManager db(rootstream::Config::from_env());
        std::cout << db.query("SELECT $1::text AS hello", {"from C++"}).dump() << "\n";
        return 0;
    } catch (const rootstream::ConnectionError& e) {
        std::cerr << "cpp_consumer: the database is not reachable: " << e.what() << "\n";
        return 2;
    } catch (const rootstream::Error& e) {
        std::cerr << "cpp_consumer: " << e.what() << " (code " << e.code() << ")\n";
        return 1;
    }
}
