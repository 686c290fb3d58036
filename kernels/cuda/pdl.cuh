// Programmatic dependent launch (sm_90+) for our kernels: LaunchPdl launches a kernel with
// cudaLaunchAttributeProgrammaticStreamSerialization when PdlEnabled() (kernels/cuda/pdl.h),
// else as a plain launch. A kernel launched through it may start while the previous kernel of
// the stream still runs, so it MUST call PdlWait() (every block, every path) before its first
// read of anything an earlier kernel wrote and before its first global write; before the wait
// it may only read weights / parameters. PdlLaunchDependents() lets the NEXT kernel's blocks
// start (implicit at exit when omitted). Both are no-ops below sm_90 and when the launch carried
// no programmatic dependency, so kernels behave identically with BMS_PDL=0.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/pdl.h"

namespace bms::cuda {

// Blocks until the previous kernel of the stream has completed and its writes are visible.
__device__ __forceinline__ void PdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Allows the next (programmatically dependent) kernel of the stream to be scheduled.
__device__ __forceinline__ void PdlLaunchDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Launches kernel<<<grid, block, smem, stream>>>(args...), with the programmatic-serialization
// attribute when PdlEnabled(). Errors surface through cudaGetLastError (BMS_CUDA_CHECK_LAUNCH)
// as for a <<<>>> launch, and are also returned.
template <typename... KArgs, typename... Args>
cudaError_t LaunchPdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                      cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = PdlEnabled() ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace bms::cuda
