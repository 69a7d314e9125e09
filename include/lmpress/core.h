// lmpress core: errors, dtypes (f16/bf16), memory-mapped files, thread pool, logging, progress.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lmpress {

// ---- errors --------------------------------------------------------------------------------
// User and file errors: a thrown Error whose message says where (file), what is wrong and, when
// useful, what to do. Tools print e.what() as one line and exit non-zero.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Builds "path: message" (path omitted when empty).
[[noreturn]] void fail(const std::string& where, const std::string& what);

// Internal invariants (never file content): abort with file:line.
#define LMP_ASSERT(cond)                                                            \
  do {                                                                              \
    if (!(cond)) ::lmpress::assert_fail(#cond, __FILE__, __LINE__);                 \
  } while (0)
[[noreturn]] void assert_fail(const char* expr, const char* file, int line);

// ---- dtypes ---------------------------------------------------------------------------------
enum class DType : uint8_t {
  F32 = 0,
  F16 = 1,
  BF16 = 2,
  I32 = 3,   // only for metadata-like tensors
  Q = 16,    // packed quantized: layout described by a format id (see formats.h)
};
const char* dtype_name(DType t);
size_t dtype_size(DType t);  // bytes per element; 0 for Q

// IEEE half <-> float, round-to-nearest-even; scalar reference implementations.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_bf16(float f);  // round-to-nearest-even, NaN preserved

// Bulk conversions (SIMD where available).
void f16_to_f32_row(const uint16_t* src, float* dst, size_t n);
void bf16_to_f32_row(const uint16_t* src, float* dst, size_t n);
void f32_to_f16_row(const float* src, uint16_t* dst, size_t n);
void f32_to_bf16_row(const float* src, uint16_t* dst, size_t n);

// ---- files ----------------------------------------------------------------------------------
// How MappedFile brings a file into memory (process-wide; the CLI sets it per command):
//   Mmap: a read-only private mapping of the file (the page cache's pages; nothing copied);
//   Copy: read into private anonymous memory advised for transparent huge pages, then made read-only
//         (costs one read of the file at load and its size in RSS; decode streams the weights from
//         it measurably faster than from the page cache: docs/results.md, session 12);
//   Auto: Copy when the file is at most half of MemAvailable (/proc/meminfo), else Mmap.
// The default is Mmap; LMPRESS_MMAP=1 / 0 in the environment forces Mmap / Copy over any setting.
enum class FileLoad { Mmap, Copy, Auto };
void set_file_load(FileLoad mode);
FileLoad file_load();
// Read-only memory map (or copy, above) of a whole file. Throws Error naming the path on failure.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool copied() const { return copied_; }  // read into anonymous memory (FileLoad::Copy)

 private:
  std::string path_;
  bool copied_ = false;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole text file. Refuses directories and devices, and anything larger than max_bytes
// (default 1 GiB) with an Error naming the path.
std::string read_text_file(const std::string& path, size_t max_bytes = size_t(1) << 30);
// Like read_text_file, but a file that starts with the bzip2 magic ("BZh1".."BZh9") is
// decompressed (libbz2; concatenated streams too); max_bytes bounds the decompressed text as well.
// A file named *.bz2 without the magic is an error.
std::string read_text_input(const std::string& path, size_t max_bytes = size_t(1) << 30);
// bzip2 data -> bytes; errors (corrupt, truncated, trailing garbage, over max_bytes) name `name`.
std::string bz2_decompress(std::string_view data, const std::string& name, size_t max_bytes);
bool is_bz2(std::string_view data);  // starts with the bzip2 magic
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);
size_t file_size(const std::string& path);

// ---- outputs: safe by default -----------------------------------------------------------------
// Rules for every output path (docs/safety.md):
//  - a path that exists and is not a regular file (file outputs) or not a directory written by
//    lmpress (directory outputs, recognised by the marker file kOutputDirMarker) is refused,
//    whatever `overwrite` says; lmpress never renames over a device, FIFO, socket or symlink;
//  - an existing output is replaced only when `overwrite` is true (the CLI's --force).
enum class OutputKind { File, Directory };
inline constexpr const char* kOutputDirMarker = ".lmpress-output";
// Throws Error("path: ...") when the rules above forbid writing `path`.
void check_output_path(const std::string& path, OutputKind kind, bool overwrite);

// Atomic output: write to a fresh temporary beside path, fsync, rename onto path on commit(); the
// temporary is removed if the object is destroyed without commit() (error paths lose nothing).
// The output rules are checked when the object is created and again at commit (with
// overwrite=false the rename itself refuses to replace a file created meanwhile).
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path, bool overwrite = true);
  ~AtomicFile();
  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void pad_to(size_t alignment);  // zero bytes up to a multiple of alignment
  size_t tell() const { return written_; }
  // Writes at an absolute offset (pwrite), after what write() buffered; for outputs whose layout
  // is planned up front and whose parts arrive out of order (streaming quantization).
  void write_at(uint64_t offset, const void* data, size_t n);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  size_t written_ = 0;
  bool committed_ = false, overwrite_ = true;
  std::vector<uint8_t> buf_;
  void flush();
};

// Atomic directory output: build in a fresh temporary directory beside `dir` (holding the marker
// file kOutputDirMarker) and rename on commit(). An existing lmpress-written directory is replaced
// only with overwrite=true; any other existing path is refused.
class AtomicDir {
 public:
  explicit AtomicDir(const std::string& dir, bool overwrite = true);
  ~AtomicDir();
  const std::string& tmp_path() const { return tmp_; }
  void commit();

 private:
  std::string dir_, tmp_;
  bool committed_ = false, overwrite_ = true;
};

// ---- threads --------------------------------------------------------------------------------
// Fixed pool; parallel_for splits [0, n) into contiguous chunks, one per worker (caller included).
class ThreadPool {
 public:
  static constexpr int kMaxThreads = 1024;
  // n_threads <= 0: default_threads(). Throws Error (never terminates) when n_threads exceeds
  // kMaxThreads or the threads cannot be started (memory or process limits).
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  int size() const { return n_threads_; }
  // fn(thread_index, begin, end); runs synchronously, returns when all chunks are done.
  void parallel_for(int64_t n, const std::function<void(int, int64_t, int64_t)>& fn);
  // Like parallel_for, but workers take ranges of `grain` items from a shared counter until none
  // are left: balances uneven work and threads slowed by a busy machine. fn may see several ranges.
  void parallel_for_dynamic(int64_t n, int64_t grain, const std::function<void(int, int64_t, int64_t)>& fn);
  // fn(thread_index, n_threads) on every worker.
  void run(const std::function<void(int, int)>& fn);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int n_threads_;
  void shutdown();
};
// parallel_for whose fn may throw: every worker finishes its range, then the first exception is
// rethrown on the calling thread (an exception must not escape a pool worker).
void parallel_for_checked(ThreadPool& pool, int64_t n, const std::function<void(int, int64_t, int64_t)>& fn);
int default_threads();   // LMPRESS_THREADS, else hardware_threads()
int hardware_threads();  // logical CPUs (at least 1, at most ThreadPool::kMaxThreads)

// OpenBLAS threading is off (1 thread) by default: parallel work runs on our pools, and two
// thread pools spinning on two cores oversubscribe the machine. A large BLAS call (factorisation,
// big GEMM) may enable it for its scope when its work (in flops) is worth the wake-up.
class ScopedBlasThreads {
 public:
  ScopedBlasThreads(int n_threads, double flops);
  ~ScopedBlasThreads();
};

// ---- logging / progress ---------------------------------------------------------------------
enum class LogLevel { Quiet = 0, Info = 1, Debug = 2 };
void set_log_level(LogLevel l);
LogLevel log_level();
void log_info(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Progress on stderr: a single updating line when stderr is a terminal; plain lines (at most one
// every 10 s, none for runs shorter than that) when it is not. LMPRESS_PROGRESS=0 turns it off,
// =1 forces the terminal style; -q (LogLevel::Quiet) turns it off.
class Progress {
 public:
  Progress(std::string label, int64_t total);
  ~Progress();
  void update(int64_t done, const std::string& extra = "");
  void finish();

 private:
  std::string label_;
  int64_t total_;
  double t0_, last_ = 0;
  bool enabled_, tty_ = false, done_ = false, printed_ = false;
};

double now_seconds();
size_t peak_rss_bytes();
size_t anon_rss_bytes();  // current RssAnon of this process (0 where /proc is unavailable)
// High-water mark of RssAnon while it lives: a background thread samples it every `period_ms`
// (the kernel keeps no peak of anonymous memory alone; VmHWM counts mapped files too).
class AnonPeakSampler {
 public:
  explicit AnonPeakSampler(int period_ms = 5);
  ~AnonPeakSampler();
  size_t peak() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
// Memory this process can still allocate: the least of MemAvailable (/proc/meminfo), the cgroup
// limit minus its usage, and RLIMIT_AS / RLIMIT_DATA minus what is mapped; SIZE_MAX if unknown.
size_t available_memory_bytes();

// ---- CPU features ---------------------------------------------------------------------------
enum class SimdLevel : int { Scalar = 0, AVX2 = 1, AVX512 = 2 };
SimdLevel cpu_simd_level();          // what the CPU supports
SimdLevel active_simd_level();       // min(cpu, forced)
void force_simd_level(SimdLevel l);  // tests and `--simd`; clamps to the CPU's level
const char* simd_level_name(SimdLevel l);
// AMX (Intel Advanced Matrix Extensions: tile registers, int8 and bf16 tile products) is not a
// SIMD level but an addition to AVX-512: prefill kernels use it when the CPU has AMX-TILE and
// AMX-INT8, the OS enabled the tile state (XCR0 bits 17/18) and granted this process its use
// (Linux arch_prctl ARCH_REQ_XCOMP_PERM, asked once), and the active level is AVX-512.
// `--simd avx512` / LMPRESS_SIMD=avx512 turn it off; `--simd amx` (the default) keeps it.
bool cpu_has_amx();          // CPU + OS + permission (asks for the permission on first call)
bool amx_active();           // cpu_has_amx() && active level AVX-512 && not turned off
void force_amx(bool on);     // tests and `--simd`; on = true only takes effect where cpu_has_amx()
bool amx_bf16_active();      // amx_active() and the CPU has AMX-BF16 (f16/bf16 weights' prefill)
// AVX-VNNI (VEX-encoded dpbusd on ymm: Intel Alder Lake / Sapphire Rapids and later, AMD Zen 5) is
// likewise an addition to the AVX2 level: the AVX2 level's int8 prefill kernel uses it where the
// CPU has it (on CPUs that also have AVX-512 only when the level is forced to AVX2).
// `--simd avx2` / LMPRESS_SIMD=avx2 turn it off (plain AVX2: maddubs); `--simd avxvnni` /
// LMPRESS_SIMD=avxvnni is the AVX2 level with it.
bool cpu_has_avxvnni();
bool avxvnni_active();       // cpu_has_avxvnni() && active level AVX2 && not turned off
void force_avxvnni(bool on);  // tests and `--simd`
// f16/bf16 weights' prefill on AMX: int8 tiles on 16-bit fixed-point limbs (true: the default)
// or bf16 tiles on a high+low split (false when amx_bf16_active() and LMPRESS_F16_PREFILL=bf16x3
// or force_f16_prefill_bf16x3(true)); false without AMX.
bool f16_prefill_int16();
void force_f16_prefill_bf16x3(bool on);  // tests and A/B runs
std::string cpu_feature_string();  // e.g. "avx2 fma f16c" / "avx512f avx512vnni avx512bf16"
std::string blas_info();           // which BLAS is linked, e.g. "OpenBLAS 0.3.21 Haswell (pthreads)"
// OpenBLAS 0.3.21 (Debian 12) does not know newer CPUs (e.g. Xeon "Emerald Rapids", family 6
// model 0xCF) and falls back to its generic Prescott (SSE3) kernels: sgemm at half speed or worse.
// Its kernels can only be chosen before the library initializes, so a program calls this first
// thing in main(): where OpenBLAS chose a generic core on a CPU with AVX2 / AVX-512, it sets
// OPENBLAS_CORETYPE (Haswell / SkylakeX) and re-executes itself (/proc/self/exe) once. A user's
// OPENBLAS_CORETYPE is kept; LMPRESS_BLAS_REEXEC_DONE=1 turns this off. Returns if nothing to do.
void reexec_with_tuned_blas(char** argv);

// RAII override of the SIMD level (tests).
class ScopedSimdLevel {
 public:
  // amx / avxvnni: keep AMX (at AVX-512) / AVX-VNNI (at AVX2) on, where the CPU has them
  explicit ScopedSimdLevel(SimdLevel l, bool amx = false, bool avxvnni = false);
  ~ScopedSimdLevel();

 private:
  SimdLevel prev_;
  int prev_amx_, prev_vnni_;
};

}  // namespace lmpress
