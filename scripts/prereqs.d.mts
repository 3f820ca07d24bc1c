export function checkPip(): string | null;
export function checkDisk(dir: string, needBytes: number, what: string): string | null;
export function checkCmake(min?: [number, number, number]): string | null;
export function checkCompiler(): string | null;
