// ThreadPool: a small fixed pool of worker threads for the reference ops' element-wise and
// per-channel loops (OpenBLAS threads its own GEMMs). ParallelFor splits [0, n) into contiguous
// ranges, runs them on the workers and the calling thread, and returns when all are done.
// ParallelFor must be called from one thread at a time (the backend's owner thread); it is not
// re-entrant (a range function must not call ParallelFor on the same pool).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bms::ref {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 = no workers (serial); <= 0 = hardware concurrency.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over disjoint ranges covering [0, n). Ranges hold at least min_chunk
  // items (except possibly the last) so tiny loops stay on the calling thread.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                   int64_t min_chunk = 1);

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;  // guarded by mu_
  int64_t job_n_ = 0;
  int job_parts_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

// Runs fn over [0, n) on pool, or serially on the calling thread when pool is null.
void ParallelFor(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                 int64_t min_chunk = 1);

}  // namespace bms::ref
