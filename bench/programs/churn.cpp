// std::map, std::string and std::vector churn for `compare`: keys made and
// dropped, vectors grown and freed, a rolling map of about 50k entries.
// Usage: cpp-churn SCALE. Prints `checksum N`, the same under every correct
// allocator (libstdc++'s operator new calls malloc).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: cpp-churn SCALE\n");
        return 2;
    }
    long n = static_cast<long>(std::atof(argv[1]) * 9e6);
    std::map<std::string, std::vector<long>> table;
    uint64_t s = 88172645463325252ull, sum = 0;
    for (long i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        std::string key = "key-" + std::to_string(s % 50000) + std::string(s % 40, 'k');
        auto &values = table[key];
        values.push_back(i);
        if (values.size() > 16) {
            sum += values.size();
            table.erase(key);
        }
        if (i % 10000 == 0) {
            std::vector<std::string> words;
            for (long j = 0; j < 1000; j++) words.push_back(std::to_string(j * i));
            sum += words.size();
        }
    }
    for (auto &[key, values] : table) sum += key.size() + values.size();
    std::printf("checksum %llu\n", static_cast<unsigned long long>(sum));
    return 0;
}
