// C++ through the sized and aligned operator delete variants we export.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

struct alignas(256) Aligned {
    char bytes[300];
};

int main() {
    std::vector<std::string> strings;
    for (int i = 0; i < 100000; i++) strings.push_back(std::string(i % 200, 'x'));
    for (int i = 0; i < 10000; i++) {
        auto *a = new Aligned;
        if (reinterpret_cast<std::uintptr_t>(a) % 256 != 0) return 1;
        delete a;  // operator delete(void*, size_t, align_val_t)
        auto *b = new int[i % 100 + 1];
        delete[] b;
        auto u = std::make_unique<std::vector<int>>(i % 50, i);
    }
    try {
        std::vector<char> impossible(std::size_t(1) << 62);
        return 1;
    } catch (const std::bad_alloc &) {
    }
    std::puts("sized_delete: ok");
    return 0;
}
