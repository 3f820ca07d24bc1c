export interface FoundLibtorch { dir: string; source: string; version: string }
export const packageRoot: string;
export const localTorchDir: string;
export const WHEEL_SPEC: string;
export function isLibtorchDir(dir: string | undefined | null): boolean;
export function libtorchVersion(dir: string): string;
export function findLibtorch(opts?: { tried?: string[]; useRecord?: boolean }): FoundLibtorch | null;
export function fetchWheel(log?: (msg: string) => void): FoundLibtorch;
export function recordLibtorch(found: FoundLibtorch): void;
export function preloadLibtorch(dir: string): void;
export const TORCH_INDEX_URL: string;
