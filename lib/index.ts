export * from './errors.js';
export { runtimeInfo, measureGemmPeak, type RuntimeInfo } from './runtime.js';
export { loadBackbone, Backbone, type AskOptions, type BackboneOptions, type BackboneOutput } from './backbone.js';
export type { Observation, TensorData } from './observation.js';
