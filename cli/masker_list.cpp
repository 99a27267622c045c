#include "cli/masker_list.h"

#include <filesystem>
#include <fstream>

namespace masktune::cli {

Result<std::string> MaskerListText(const std::string& flag_value) {
  if (flag_value.empty() || flag_value[0] != '@') return flag_value;
  const std::string path = flag_value.substr(1);
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st))
    return Status::Error("--maskers: cannot open '" + path + "'");
  if (std::filesystem::is_directory(st))
    return Status::Error("--maskers: '" + path + "' is a folder, not a JSON file");
  if (!std::filesystem::is_regular_file(st))
    return Status::Error("--maskers: '" + path + "' is not a regular file (a device or pipe)");
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec || size > kMaxMaskerFileBytes)
    return Status::Error("--maskers: '" + path +
                         "' is larger than the 16 MiB a masker list may be");
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::Error("--maskers: cannot open '" + path + "'");
  std::string text(size, '\0');
  f.read(text.data(), static_cast<std::streamsize>(size));
  text.resize(static_cast<size_t>(f.gcount()));
  return text;
}

}  // namespace masktune::cli
