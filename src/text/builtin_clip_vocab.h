#pragma once
// The CLIP BPE vocabulary compiled into otter: data/clip-tokenizer/{vocab.json,merges.txt}, gzipped
// at build time and linked in as bytes, so that a single-file checkpoint (which never carries a
// tokenizer) runs with no other file on the machine. Inflated on first use (~10 ms), kept for the
// life of the process.
#include <cstddef>
#include <string>

namespace otter {

struct BuiltinClipVocab {
  std::string vocab_json;  // byte for byte data/clip-tokenizer/vocab.json
  std::string merges_txt;  // byte for byte data/clip-tokenizer/merges.txt
};

const BuiltinClipVocab& builtin_clip_vocab();

// Bytes the two gzip streams add to the binary.
std::size_t builtin_clip_vocab_compressed_bytes();

}  // namespace otter
