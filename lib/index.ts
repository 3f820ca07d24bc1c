export * from './errors.js';
export { runtimeInfo, measureGemmPeak, type RuntimeInfo } from './runtime.js';
export { loadStateDict, type CheckpointTensor, type LoadStateDictOptions } from './checkpoint.js';
