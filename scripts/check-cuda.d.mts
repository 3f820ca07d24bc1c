export const CUDA_ARCHS: string[];
export function findNvcc(opts?: { env?: Record<string, string | undefined>; extraDirs?: string[] }): string | null;
export function nvccArgs(source: string, output: string, archs?: string[]): string[];
export interface CudaCompileResult { file: string; command: string; status: number | null; seconds: number; output: string }
export function checkCuda(opts?: { files?: string[]; nvcc?: string | null; archs?: string[]; jobs?: number }):
  Promise<{ skipped: string } | { ok: boolean; nvcc: string; results: CudaCompileResult[] }>;
