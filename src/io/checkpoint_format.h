#pragma once
// Recognises what a checkpoint file is from its first bytes, and refuses PyTorch pickle
// checkpoints (.ckpt/.pt/.pth/.bin) with a message saying why and how to convert them.
#include <filesystem>
#include <string>

namespace otter {

enum class FileFormat {
  Safetensors,  // 8-byte little-endian header length, then a JSON object
  Pickle,       // raw pickle stream (legacy torch.save, diffusers/transformers .bin)
  Zip,          // zip archive: torch.save since PyTorch 1.6 (a pickle inside)
  Unknown,
};

// Reads at most the first 16 bytes; throws if the file cannot be opened.
FileFormat sniff_file_format(const std::filesystem::path& path);

// True for the extensions PyTorch checkpoints use: .ckpt .pt .pth .bin (any case).
bool has_pickle_extension(const std::filesystem::path& path);

// The full explanation for refusing `path`: pickle loading runs code from the file; how to
// convert it to .safetensors (a one-line Python command, or diffusers' conversion script).
std::string pickle_refusal_message(const std::filesystem::path& path, const std::string& why);

// Throws otter::Error with pickle_refusal_message() if `path` has a pickle extension or
// pickle/zip content (whatever its extension).
void refuse_pickle_checkpoint(const std::filesystem::path& path);

}  // namespace otter
