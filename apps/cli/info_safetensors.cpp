// `otter info FILE.safetensors`: one line per tensor, then totals per dtype and the metadata.
#include <algorithm>
#include <iomanip>
#include <map>
#include <sstream>
#include <string>

#include "core/dtype.h"
#include "info.h"
#include "io/safetensors.h"

namespace otter::cli {

namespace {

// 1234567 -> "1,234,567": parameter counts of real checkpoints run to billions.
std::string grouped(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  std::ostringstream s;
  if (u == 0) {
    s << n << " B";
  } else {
    s << std::fixed << std::setprecision(1) << v << ' ' << units[u];
  }
  return s.str();
}

struct DtypeTotals {
  uint64_t tensors = 0, elements = 0, bytes = 0;
};

}  // namespace

void describe_safetensors(const std::filesystem::path& path, std::ostream& out) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const std::vector<std::string> names = file.names();

  size_t name_width = 4;
  for (const std::string& n : names) name_width = std::max(name_width, n.size());

  out << std::left << std::setw(static_cast<int>(name_width)) << "name" << "  " << std::setw(5) << "dtype" << "  shape\n";
  std::map<std::string, DtypeTotals> by_dtype;
  uint64_t params = 0, data_bytes = 0;
  for (const std::string& n : names) {
    const SafetensorsEntry& e = file.info(n);
    out << std::setw(static_cast<int>(name_width)) << n << "  " << std::setw(5) << dtype_name(e.dtype) << "  "
        << e.shape.str() << "\n";
    DtypeTotals& d = by_dtype[std::string(dtype_name(e.dtype))];
    d.tensors += 1;
    d.elements += static_cast<uint64_t>(e.shape.numel());
    d.bytes += e.nbytes;
    data_bytes += e.nbytes;
    // Integer tensors (position ids, token ids) are not trainable parameters.
    if (dtype_is_float(e.dtype)) params += static_cast<uint64_t>(e.shape.numel());
  }

  out << "\nfile:       " << path.string() << "\n"
      << "size:       " << grouped(file.file_bytes()) << " bytes (" << human_bytes(file.file_bytes()) << "), header "
      << grouped(file.header_bytes()) << " bytes, tensor data " << grouped(data_bytes) << " bytes\n"
      << "tensors:    " << names.size() << "\n"
      << "parameters: " << grouped(params) << " (elements of floating-point tensors)\n"
      << "dtypes:\n";
  for (const auto& [name, d] : by_dtype)
    out << "  " << std::setw(5) << name << "  " << d.tensors << (d.tensors == 1 ? " tensor, " : " tensors, ") << grouped(d.elements) << " elements, "
        << human_bytes(d.bytes) << "\n";
  if (file.metadata().empty()) {
    out << "metadata:   none\n";
  } else {
    out << "metadata:\n";
    for (const auto& [k, v] : file.metadata()) out << "  " << k << " = " << v << "\n";
  }
}

}  // namespace otter::cli
