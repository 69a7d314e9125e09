// bzip2-compressed text inputs (libbz2): whole-buffer decompression with an output limit, and the
// text reader that decompresses a file when it carries the bzip2 magic.
#include <bzlib.h>

#include <algorithm>
#include <climits>

#include "lmpress/core.h"

namespace lmpress {

bool is_bz2(std::string_view data) {
  return data.size() >= 4 && data[0] == 'B' && data[1] == 'Z' && data[2] == 'h' && data[3] >= '1' &&
         data[3] <= '9';
}

namespace {
// One libbz2 decompression stream, ended on every exit path.
struct Bz2Stream {
  bz_stream s{};
  bool open = false;
  ~Bz2Stream() { close(); }
  void close() {
    if (open) BZ2_bzDecompressEnd(&s);
    open = false;
  }
};

std::string bz2_problem(int ret) {
  switch (ret) {
    case BZ_DATA_ERROR_MAGIC: return "not bzip2 data (bad stream header)";
    case BZ_DATA_ERROR: return "corrupt bzip2 data (checksum or block error)";
    case BZ_MEM_ERROR: return "out of memory while decompressing bzip2 data";
    default: return "bzip2 decompression failed (libbz2 error " + std::to_string(ret) + ")";
  }
}
}  // namespace

std::string bz2_decompress(std::string_view data, const std::string& name, size_t max_bytes) {
  if (!is_bz2(data)) fail(name, "not bzip2 data (no 'BZh' header)");
  std::string out;
  size_t pos = 0;  // start of the current stream in data
  // A file may hold several concatenated streams (what `bzip2 -c a b` and parallel compressors
  // write); each is decompressed in turn, and anything after the last one that is not another
  // stream is an error.
  while (pos < data.size()) {
    if (!is_bz2(data.substr(pos)))
      fail(name, "trailing data after the bzip2 stream at byte " + std::to_string(pos));
    Bz2Stream st;
    int ret = BZ2_bzDecompressInit(&st.s, 0, 0);
    if (ret != BZ_OK) fail(name, bz2_problem(ret));
    st.open = true;
    const size_t in_len = data.size() - pos;
    // libbz2 counts in unsigned int: feed at most UINT_MAX bytes at a time.
    size_t in_used = 0;
    for (;;) {
      if (st.s.avail_in == 0 && in_used < in_len) {
        const size_t n = std::min<size_t>(in_len - in_used, UINT_MAX);
        st.s.next_in = const_cast<char*>(data.data() + pos + in_used);
        st.s.avail_in = unsigned(n);
        in_used += n;
      }
      if (out.size() >= max_bytes)
        fail(name, "decompressed text is more than the limit of " + std::to_string(max_bytes) + " bytes");
      const size_t room = std::min<size_t>({max_bytes - out.size(), size_t(1) << 20, UINT_MAX});
      const size_t old = out.size();
      out.resize(old + room);
      st.s.next_out = out.data() + old;
      st.s.avail_out = unsigned(room);
      ret = BZ2_bzDecompress(&st.s);
      out.resize(old + (room - st.s.avail_out));
      if (ret == BZ_STREAM_END) break;
      if (ret != BZ_OK) fail(name, bz2_problem(ret));
      // All input consumed and nothing more comes out: the stream stops before its end marker.
      if (st.s.avail_in == 0 && in_used == in_len && out.size() == old)
        fail(name, "truncated bzip2 data (the stream ends early)");
    }
    pos += in_used - st.s.avail_in;
  }
  return out;
}

std::string read_text_input(const std::string& path, size_t max_bytes) {
  std::string raw = read_text_file(path, max_bytes);
  if (is_bz2(raw)) return bz2_decompress(raw, path, max_bytes);
  const bool bz2_name = path.size() >= 4 && path.compare(path.size() - 4, 4, ".bz2") == 0;
  if (bz2_name) fail(path, "named .bz2 but not bzip2 data (no 'BZh' header)");
  return raw;
}

}  // namespace lmpress
