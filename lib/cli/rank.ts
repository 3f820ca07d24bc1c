/**
 * One process of `m2vla train --nproc N` (lib/cli/launch.ts starts it with torchrun's environment: RANK, WORLD_SIZE,
 * LOCAL_RANK, MASTER_ADDR, MASTER_PORT): `m2vla train` with the launcher's arguments.
 */
import { main } from './main.js';

main(['train', ...process.argv.slice(2)]).catch((e) => {
  console.error(e?.message ?? e);
  process.exit(1);
});
