#include "io/checkpoint_format.h"

#include <cctype>
#include <fstream>

#include "core/error.h"

namespace otter {

namespace fs = std::filesystem;

FileFormat sniff_file_format(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(cat("cannot open '", path.string(), "': the file is missing or unreadable"));
  unsigned char b[16] = {};
  in.read(reinterpret_cast<char*>(b), sizeof b);
  const std::streamsize n = in.gcount();
  // zip local file header "PK\3\4" (also an empty archive "PK\5\6").
  if (n >= 4 && b[0] == 'P' && b[1] == 'K' && ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6)))
    return FileFormat::Zip;
  // Pickle protocol 2+ starts with the PROTO opcode 0x80 and the protocol number.
  if (n >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5) return FileFormat::Pickle;
  // safetensors: u64 header size, then the JSON header's '{' (writers never pad before it).
  if (n >= 9 && b[8] == '{') return FileFormat::Safetensors;
  return FileFormat::Unknown;
}

bool has_pickle_extension(const fs::path& path) {
  std::string e = path.extension().string();
  for (char& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e == ".ckpt" || e == ".pt" || e == ".pth" || e == ".bin";
}

std::string pickle_refusal_message(const fs::path& path, const std::string& why) {
  const std::string p = path.string();
  fs::path out = path;
  out.replace_extension(".safetensors");
  return cat(
      "'", p, "' is a PyTorch pickle checkpoint (", why, "). otter does not load pickle files: unpickling runs ",
      "Python code stored in the file, so a tampered checkpoint can execute anything on your machine. ",
      "Convert it once to .safetensors (a format that holds only tensors), with Python, torch and safetensors ",
      "installed, for a file you trust:\n",
      "  python -c \"import torch; from safetensors.torch import save_file; ",
      "sd = torch.load('", p, "', map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); ",
      "save_file({k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}, '", out.string(), "')\"\n",
      "then run otter on '", out.string(), "'. Or make a diffusers folder with diffusers' ",
      "scripts/convert_original_stable_diffusion_to_diffusers.py --checkpoint_path '", p,
      "' --dump_path <folder> --to_safetensors.");
}

void refuse_pickle_checkpoint(const fs::path& path) {
  if (has_pickle_extension(path))
    throw Error(pickle_refusal_message(path, cat("'", path.extension().string(), "' file")));
  switch (sniff_file_format(path)) {
    case FileFormat::Zip: throw Error(pickle_refusal_message(path, "its content is a zip archive written by torch.save"));
    case FileFormat::Pickle: throw Error(pickle_refusal_message(path, "its content is a pickle stream"));
    case FileFormat::Safetensors:
    case FileFormat::Unknown: break;
  }
}

}  // namespace otter
