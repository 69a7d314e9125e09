// safetensors reader and writer.
//
// Layout: u64 little-endian header length N, N bytes of JSON
//   {"<name>": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data region; offsets are relative to its start, tensors may not overlap.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <cstring>
#include <set>
#include <string>

#include "io/io_internal.h"
#include "lmpress/io.h"

namespace lmpress {

using namespace io_detail;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMaxHeader = 100ull << 20;  // 100 MB of JSON is far beyond any real model

// Element size of a safetensors dtype; 0 when unknown.
size_t st_elem_size(const std::string& d) {
  static const std::pair<const char*, size_t> table[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"U64", 8},
      {"I32", 4}, {"U32", 4}, {"I16", 2}, {"U16", 2}, {"I8", 1},  {"U8", 1},
      {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  for (const auto& [name, size] : table)
    if (d == name) return size;
  return 0;
}

}  // namespace

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

void parse_safetensors_buffer(const uint8_t* data, size_t n, const std::string& name,
                              SafetensorsFile& out) {
  if (n < 8)
    fail(name, "safetensors file truncated: " + std::to_string(n) +
                   " bytes, need at least 8 for the header length");
  const uint64_t hlen = load_u64(data);
  if (hlen > kMaxHeader)
    fail(name, "safetensors header length " + std::to_string(hlen) +
                   " exceeds the 100 MB limit (not a safetensors file?)");
  if (hlen > n - 8)
    fail(name, "safetensors header length " + std::to_string(hlen) + " runs past the end of the " +
                   std::to_string(n) + "-byte file (truncated?)");
  const uint8_t* region = data + 8 + hlen;
  const size_t region_bytes = n - 8 - size_t(hlen);

  json h;
  try {
    h = json::parse(data + 8, data + 8 + hlen);
  } catch (const json::exception& e) {
    fail(name, std::string("safetensors header is not valid JSON: ") + io_detail::json_error_text(e));
  }
  if (!h.is_object()) fail(name, "safetensors header is not a JSON object");

  out.metadata.clear();
  out.tensors.clear();
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail(name, "safetensors __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(name, "safetensors __metadata__ value for '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + key + "'";
    if (!v.is_object()) fail(name, where + ": entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) fail(name, where + ": missing or non-string dtype");
    if (sh == v.end() || !sh->is_array()) fail(name, where + ": missing or non-array shape");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      fail(name, where + ": data_offsets must be an array [begin, end]");
    SafetensorsTensor t;
    t.name = key;
    t.dtype = dt->get<std::string>();
    const size_t es = st_elem_size(t.dtype);
    if (es == 0) fail(name, where + ": unknown dtype '" + t.dtype + "'");
    if (sh->size() > 8) fail(name, where + ": more than 8 dimensions");
    uint64_t bytes = es;
    bool too_big = false;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned())
        fail(name, where + ": shape entries must be non-negative integers");
      const uint64_t x = d.get<uint64_t>();
      if (x != 0 && bytes > UINT64_MAX / x) too_big = true;  // keeps going to read the shape
      bytes = too_big ? UINT64_MAX : bytes * x;
      t.shape.push_back(int64_t(std::min<uint64_t>(x, INT64_MAX)));
    }
    const json& b = (*off)[0];
    const json& e = (*off)[1];
    if (!b.is_number_unsigned() || !e.is_number_unsigned())
      fail(name, where + ": data_offsets must be non-negative integers");
    const uint64_t begin = b.get<uint64_t>(), end = e.get<uint64_t>();
    if (begin > end || end > region_bytes)
      fail(name, where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                     "] lie outside the data region of " + std::to_string(region_bytes) +
                     " bytes (file truncated?)");
    if (too_big || end - begin != bytes)
      fail(name, where + ": data_offsets span " + std::to_string(end - begin) + " bytes but " +
                     t.dtype + " " + shape_str(t.shape) + " needs " +
                     (too_big ? std::string("more than 2^64") : std::to_string(bytes)));
    t.data = region + begin;
    t.nbytes = size_t(bytes);
    out.tensors.push_back(std::move(t));
  }
  // Sort by position and reject overlaps.
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
              return a.data != b.data ? a.data < b.data : a.nbytes < b.nbytes;
            });
  for (size_t i = 1; i < out.tensors.size(); ++i) {
    const auto& a = out.tensors[i - 1];
    const auto& b = out.tensors[i];
    if (a.data + a.nbytes > b.data && a.nbytes > 0 && b.nbytes > 0)
      fail(name, "tensors '" + a.name + "' and '" + b.name + "' overlap in the data region");
  }
}

SafetensorsFile read_safetensors(const std::string& path) {
  SafetensorsFile f;
  f.file = std::make_shared<MappedFile>(path);
  parse_safetensors_buffer(f.file->data(), f.file->size(), path, f);
  return f;
}

std::string io_detail::safetensors_header(const std::string& path, const std::vector<SafetensorsWriteTensor>& specs,
                                          const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) md[k] = v;
    h["__metadata__"] = md;
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& t : specs) {
    if (t.name == "__metadata__" || t.name.empty() || !names.insert(t.name).second)
      fail(path, "cannot write tensor name '" + t.name + "' (empty, reserved or duplicate)");
    const size_t es = st_elem_size(t.dtype);
    if (es == 0) fail(path, "cannot write tensor '" + t.name + "': unknown dtype " + t.dtype);
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) fail(path, "cannot write tensor '" + t.name + "': negative dimension");
      numel *= uint64_t(d);
    }
    if (numel * es != t.nbytes)
      fail(path, "cannot write tensor '" + t.name + "': " + std::to_string(t.nbytes) +
                     " bytes given, shape " + shape_str(t.shape) + " of " + t.dtype + " needs " +
                     std::to_string(numel * es));
    nlohmann::ordered_json e;
    e["dtype"] = t.dtype;
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + t.nbytes};
    h[t.name] = e;
    offset += t.nbytes;
  }
  std::string text = h.dump();
  // Pad with spaces so the data region starts 8-byte aligned (allowed by the format).
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  const uint64_t hlen = text.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &hlen, 8);
  return out + text;
}

void io_detail::write_safetensors_lazy(const std::string& path,
                                       const std::vector<SafetensorsWriteTensor>& specs,
                                       const std::map<std::string, std::string>& metadata,
                                       const std::function<Tensor(size_t)>& produce, bool overwrite) {
  const std::string head = safetensors_header(path, specs, metadata);
  AtomicFile f(path, overwrite);
  f.write(head);
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].nbytes == 0) continue;
    const Tensor t = produce(i);
    if (t.nbytes != specs[i].nbytes || t.data == nullptr)
      fail(path, "tensor '" + specs[i].name + "' produced " + std::to_string(t.nbytes) +
                     " bytes, expected " + std::to_string(specs[i].nbytes));
    f.write(t.data, t.nbytes);
  }
  f.commit();
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsWriteTensor>& ts,
                       const std::map<std::string, std::string>& metadata, bool overwrite) {
  for (const auto& t : ts)
    if (t.data == nullptr && t.nbytes != 0)
      fail(path, "cannot write tensor '" + t.name + "': no data");
  write_safetensors_lazy(path, ts, metadata, [&](size_t i) {
    return view_tensor(ts[i].name, DType::F32, ts[i].shape, ts[i].data, ts[i].nbytes);
  }, overwrite);
}

}  // namespace lmpress
