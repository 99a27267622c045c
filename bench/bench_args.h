// File: bench/bench_args.h
//
// The bench programs' shared argument rule: `--help` (or -h) prints the
// usage and exits 0 instead of running the whole benchmark, and a flag
// without its value is an error (exit 2), not silently dropped.
#pragma once

#include <cstdio>
#include <cstring>

namespace masktune::bench {

// -1: go on and parse `--flag value` pairs; otherwise the exit code to return.
inline int HelpOrArgError(int argc, char** argv, const char* usage) {
  for (int i = 1; i < argc; ++i)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::printf("%s", usage);
      return 0;
    }
  if ((argc - 1) % 2 != 0) {
    std::fprintf(stderr, "%s: %s needs a value\n%s", argv[0], argv[argc - 1], usage);
    return 2;
  }
  return -1;
}

}  // namespace masktune::bench
