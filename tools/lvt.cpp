#include <cstdio>
int main() { std::puts("lvt"); return 0; }
