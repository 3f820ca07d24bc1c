// The hot loops of the fused kernels are plain C++ written so the compiler vectorizes them (independent lanes, no
// reassociation needed). The addon is built for baseline x86-64, so those functions are compiled several times
// and the loader picks the widest the CPU supports (GCC/Clang function multi-versioning through an ifunc).
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define M2VLA_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define M2VLA_SIMD_CLONES
#endif
