/**
 * Runs an outgoing call under one deadline for the whole of it (answer and body), through the
 * signal it is given. The timer is cleared when the call ends: `AbortSignal.timeout` would keep
 * its timer and still fire for a call long finished, building an abort error each time (about
 * one per federation message and callback).
 */
export async function withDeadline<T>(timeoutMs: number, call: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException("The operation timed out.", "TimeoutError")), timeoutMs);
  timer.unref();
  try {
    return await call(controller.signal);
  } finally {
    clearTimeout(timer);
  }
}
