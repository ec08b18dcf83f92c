// The reconnect policy: exponential backoff with full jitter.
//
// Owns: the delay before each reconnection attempt. Must never return a delay above the cap
// or below zero, nor keep state beyond the attempt count its caller passes.

export interface ReconnectPolicy {
  /** Off: a lost connection closes the client. Default true. */
  enabled?: boolean;
  /** The first attempt's delay bound, ms (default 100). */
  baseMs?: number;
  /** The largest delay bound, ms (default 5000). */
  capMs?: number;
  /** Attempts after which the client gives up and closes (default: never). */
  maxAttempts?: number;
  /** The jitter's source of numbers in [0, 1) (default Math.random): for reproducible delays. */
  random?: () => number;
}

/** Delay before attempt `attempt` (0-based): random(0, min(cap, base * 2^attempt)). */
export function backoffDelay(
  policy: ReconnectPolicy,
  attempt: number,
  random: () => number = policy.random ?? Math.random,
): number {
  const base = policy.baseMs ?? 100;
  const cap = policy.capMs ?? 5000;
  const bound = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * bound);
}
