// lmpress io: parsers and writers of model files (untrusted input: every length is checked
// against the bytes left; errors name the file and the problem).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "lmpress/model.h"

namespace lmpress {

// ---- GGUF v2/v3 -------------------------------------------------------------------------------
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8,
  ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

struct GgufValue {
  GgufType type = GgufType::U32;
  GgufType elem_type = GgufType::U32;  // for ARRAY
  // Scalars are stored widened; arrays as vectors of the widened type.
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  bool b = false;
  std::string s;
  std::vector<int64_t> ai;
  std::vector<double> af;
  std::vector<std::string> as;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order: ne[0] is the fastest-varying (columns)
  uint32_t ggml_type = 0;   // 0 F32, 1 F16, 30 BF16, or a block type of the ggml format family
  uint64_t offset = 0;      // relative to the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
};

struct GgufFile {
  std::shared_ptr<MappedFile> file;
  uint32_t version = 0;
  std::map<std::string, GgufValue> kv;
  std::vector<GgufTensorInfo> tensors;
  size_t alignment = 32;
  size_t data_offset = 0;

  const GgufValue* find(const std::string& key) const;
  const GgufTensorInfo* find_tensor(const std::string& name) const;
};

// Parses the header, metadata and tensor table; verifies every tensor lies inside the file.
GgufFile read_gguf(const std::string& path);
GgufFile parse_gguf(std::shared_ptr<MappedFile> file);  // path taken from file->path()
// Same checks on a plain buffer (fuzzing); name used in messages.
void parse_gguf_buffer(const uint8_t* data, size_t n, const std::string& name, GgufFile& out);

// ---- safetensors ------------------------------------------------------------------------------
struct SafetensorsTensor {
  std::string name;
  std::string dtype;  // "F32" "F16" "BF16" "U8" ...
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
};
struct SafetensorsFile {
  std::shared_ptr<MappedFile> file;
  std::map<std::string, std::string> metadata;  // "__metadata__"
  std::vector<SafetensorsTensor> tensors;
  const SafetensorsTensor* find(const std::string& name) const;
};
SafetensorsFile read_safetensors(const std::string& path);
void parse_safetensors_buffer(const uint8_t* data, size_t n, const std::string& name,
                              SafetensorsFile& out);

struct SafetensorsWriteTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;
};
// Writes atomically (temporary + rename). Tensors are written in the order given.
// overwrite=false refuses an existing path; any existing non-regular path is always refused.
void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteTensor>& ts,
                       const std::map<std::string, std::string>& metadata, bool overwrite = true);

// ---- model loading ------------------------------------------------------------------------------
struct LoadOptions {
  std::string tokenizer_path;  // override; otherwise found beside the model
  bool require_tokenizer = true;
  bool check_tensors = true;   // check_tensors_finite() after loading (CLI: --no-check skips it)
};

// Fails (Error naming the model file, the tensor and the index) when a weight, bias, norm or a
// packed tensor's scale is NaN or infinite.
void check_tensors_finite(const Model& m);

// Detects the format: directory with config.json (Hugging Face), GGUF magic, lmpress container,
// otherwise a llama2.c checkpoint. Throws Error naming the file on any problem.
Model load_model(const std::string& path, const LoadOptions& opt = {});
Model load_llama2c(const std::string& path, const LoadOptions& opt);
Model load_gguf_model(const std::string& path, const LoadOptions& opt);
Model load_hf_model(const std::string& dir, const LoadOptions& opt);

// Config parsing (exposed for tests and fuzzing).
ModelConfig parse_hf_config(const std::string& json_text, const std::string& name);
void parse_llama2c_buffer(const uint8_t* data, size_t n, const std::string& name, ModelConfig& cfg);

// Vocabulary from GGUF metadata (tokenizer.ggml.*). Throws if absent.
Vocab vocab_from_gguf(const GgufFile& g, const std::string& name);

// ---- model writing ------------------------------------------------------------------------------
// Every writer is atomic and follows the output rules of core.h (check_output_path): an existing
// output is replaced only with overwrite=true (the CLI's --force), and only when it is a regular
// file (file outputs) or a directory written by lmpress (write_hf_model).
// How a writer stores each weight (lmpress convert --dtype / --requant). 1-D tensors (norms,
// biases) are always F32.
struct WriteOptions {
  // F32 / F16 / BF16: the type of every dense 2-D weight. Unset: each keeps its dtype.
  std::optional<DType> dtype;
  // Packed weights: true: dequantized (the reference dequantization, sparse outliers included) to
  // `dtype` (F32 when unset): `lmpress convert --dtype`. false (the default): in GGUF as their
  // exact llama.cpp type (docs/formats.md, "Writers"; a format without one is refused, naming the
  // tensor and the nearest exact choice); a Hugging Face directory always dequantizes them.
  bool dequantize = false;
  // GGUF without `dequantize`: a llama.cpp type name ("q4_k"): packed weights without an exact
  // type are dequantized and re-quantized to it (RTN) instead of refused; the added error is reported.
  std::string requant;
  bool overwrite = true;
};

// What write_gguf_model did with packed weights.
struct GgufWriteReport {
  uint32_t file_type = 0;               // general.file_type written (llama.cpp's LLAMA_FTYPE)
  std::map<std::string, int> mapped;    // "w4g32 -> Q4_0": tensor count (exact maps, copies)
  int n_dequantized = 0;                // packed weights written dense (dtype given)
  // Asymmetric exact maps (value = d q + m, m = f16(-scale * zero)): the change the f16 offset adds.
  int n_asym = 0, n_asym_changed = 0;   // asymmetric tensors / of them with a changed value
  double asym_max_abs = 0;              // largest |GGUF value - lmpress value|
  double asym_rel_rms = 0;              // RMS of the change / RMS of the weights, all asymmetric tensors
  struct Requant {
    std::string name, from, to;
    double rel_rms;                     // RMS(requantized - lmpress) / RMS(lmpress), this tensor
  };
  std::vector<Requant> requant;         // --requant: every re-quantized tensor
  double requant_rel_rms = 0;           // the same over all of them
};

// Hugging Face directory: config.json, model.safetensors, tokenizer.model or tokenizer.json,
// tokenizer_config.json, generation_config.json. q/k rows are permuted to the HF convention.
void write_hf_model(const Model& m, const std::string& dir, const WriteOptions& opt);
void write_hf_model(const Model& m, const std::string& dir, DType dtype, bool overwrite = true);
// Hugging Face GPTQ directory (docs/formats.md "Hugging Face GPTQ and AWQ"): every linear layer
// in an int format (2, 3, 4 or 8 bits, groups dividing its columns or per row, sym or asym) as
// qweight / qzeros / scales / g_idx, config.json with quantization_config (desc_act false,
// checkpoint_format "gptq", i.e. v1: stored zero = zero - 1; "gptq_v2" when an asymmetric zero is
// 0, which v1 cannot store), also as quantize_config.json; dense tensors in `dtype`, a packed
// embedding dequantized to f32 (exact). Any other packed tensor is refused, naming it.
void write_hf_gptq_model(const Model& m, const std::string& dir, DType dtype, bool overwrite = true);
// GGUF v3 with llama architecture metadata and the tokenizer; q/k rows in GGUF convention
// (packed rows too); general.file_type from the most frequent tensor type, and
// general.quantization_version 2 when a weight is quantized.
GgufWriteReport write_gguf_model(const Model& m, const std::string& path, const WriteOptions& opt);
void write_gguf_model(const Model& m, const std::string& path, DType dtype, bool overwrite = true);

}  // namespace lmpress

namespace lmpress {
// ---- lmpress container (docs/formats.md "lmpress file") ----------------------------------------
// A safetensors file whose __metadata__ carries format=lmpress, a version, the model config, the
// per-tensor packed formats, the recipe; packed tensors are U8 byte arrays, the vocabulary is a
// U8 tensor holding JSON. Written atomically.
void write_lmpress_model(const Model& m, const std::string& path, bool overwrite = true);
Model load_lmpress_model(const std::string& path, const LoadOptions& opt);
// Streaming output of a quantization: the layout of every tensor is planned up front
// (plan_quantization), the header and vocabulary are written at once, and put() writes each
// tensor at its place as soon as it is final. commit() checks all arrived, then renames the
// temporary into place; an error or a destroyed writer leaves no output.
class LmpressStreamWriter : public TensorSink {
 public:
  // overwrite = false: an existing output is refused (the CLI's --force sets it).
  LmpressStreamWriter(const std::string& path, const Model& src, const std::vector<PlannedTensor>& plan,
                      const std::map<std::string, std::string>& metadata, bool overwrite = true);
  ~LmpressStreamWriter() override;
  void put(const Tensor& t) override;
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
// The same checks on a plain buffer (fuzzing); tensors point into `data`, which must outlive the
// model; name used in messages.
Model parse_lmpress_buffer(const uint8_t* data, size_t n, const std::string& name, const LoadOptions& opt);
// True when the file looks like a safetensors file with lmpress metadata.
bool is_lmpress_file(const std::string& path);
}  // namespace lmpress
