// File: cli/masker_list.h
//
// The --maskers argument of `attend` and `ruler`: a masker list as inline
// JSON, or @FILE (a regular file of at most 16 MiB: a folder, a device or
// a pipe is refused at once). The text is parsed by the registry
// (MaskerRegistry::ParseJsonList), the form `export --format json` writes.
#pragma once

#include <cstdint>
#include <string>

#include "engine/status.h"

namespace masktune::cli {

inline constexpr uintmax_t kMaxMaskerFileBytes = 16u << 20;

// The masker list's JSON text from the flag's value (inline or @FILE).
Result<std::string> MaskerListText(const std::string& flag_value);

}  // namespace masktune::cli
