import type { FoundLibtorch } from './libtorch.mjs';
export function loadAddon(): { addon: unknown; file: string; libtorch: FoundLibtorch };
