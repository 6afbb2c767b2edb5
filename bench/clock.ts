/**
 * Milliseconds on the system's monotonic clock (`CLOCK_MONOTONIC`, through `process.hrtime`):
 * one clock for every process on the machine, so a time stamped in the device's process and
 * one stamped in the secondary's can be subtracted. `performance.now()` counts from each
 * process's own start.
 */
export const monotonicMs = (): number => Number(process.hrtime.bigint()) / 1e6;
