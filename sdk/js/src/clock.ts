/**
 * Live clocks: what every participant's clock reads at a given server time,
 * computed from the last snapshot (nobody counts down locally). This is the
 * TypeScript twin of `synckairos_core::view` (docs/API.md §2 and §4), the one
 * module that knows each sync mode's clock math; the tests hold it to the
 * server's own numbers for every mode.
 */
import type { SyncState } from "./generated/api.js";

/** A participant's clock at some instant. */
export interface Clock {
  /** Whose clock. */
  participantId: string;
  /**
   * Bank left (ms, never below 0). For a `count_up` stopwatch without
   * `max_time_ms` it is the stored bank, which does not move.
   */
  remainingMs: number;
  /** Time used so far (ms), the running turn included. */
  usedMs: number;
  /** Whether it is this participant's turn. */
  isActive: boolean;
  /** Whether this participant's time ran out (as the server last said). */
  hasExpired: boolean;
}

/** Epoch ms of an ISO-8601 timestamp of the API, or `null`. */
export function parseTimestamp(iso: string | null | undefined): number | null {
  if (iso === null || iso === undefined) return null;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

/** Whether the participants' banks count down (all but an uncapped `count_up`). */
export function hasBank(state: SyncState): boolean {
  return state.sync_mode !== "count_up" || (state.max_time_ms ?? null) !== null;
}

/** The position of the active participant in `participants`, or -1. */
export function activeIndex(state: SyncState): number {
  if (state.active_participant_id === null) return -1;
  return state.participants.findIndex((p) => p.participant_id === state.active_participant_id);
}

function groupKey(state: SyncState, i: number): string {
  const p = state.participants[i];
  if (p === undefined) return "";
  return p.group_id ?? p.participant_id;
}

/**
 * Positions of the participants that share participant `i`'s bank: only `i`
 * in `per_participant` and `per_cycle`, its group in `per_group`, everyone in
 * `global` and `count_up`.
 */
export function bankSharers(state: SyncState, i: number): number[] {
  switch (state.sync_mode) {
    case "per_participant":
    case "per_cycle":
      return [i];
    case "per_group": {
      const g = groupKey(state, i);
      return state.participants.map((_, j) => j).filter((j) => groupKey(state, j) === g);
    }
    case "global":
    case "count_up":
      return state.participants.map((_, j) => j);
  }
}

/**
 * When the running clock runs out if nobody acts (epoch ms), or `null` when
 * nothing runs or the clock has no end. Equal to the server's `expires_at`.
 */
export function deadlineMs(state: SyncState): number | null {
  if (state.status !== "running" || !hasBank(state)) return null;
  const i = activeIndex(state);
  const started = parseTimestamp(state.cycle_started_at);
  const p = state.participants[i];
  if (p === undefined || started === null) return null;
  return started + p.time_remaining_ms;
}

/** Every participant's clock at the server time `nowMs` (epoch ms). */
export function clocks(state: SyncState, nowMs: number): Clock[] {
  const i = activeIndex(state);
  const started = parseTimestamp(state.cycle_started_at);
  const running = state.status === "running" && i >= 0 && started !== null;
  const elapsed = running ? Math.max(0, nowMs - (started as number)) : 0;
  const sharers = running ? bankSharers(state, i) : [];
  const bank = hasBank(state);
  return state.participants.map((p, j) => {
    const live = running && bank && sharers.includes(j);
    const remaining = live ? Math.max(0, p.time_remaining_ms - elapsed) : p.time_remaining_ms;
    return {
      participantId: p.participant_id,
      // A participant the server marked out of time reads 0 unless its clock
      // runs again (a later turn of a per_cycle auto_advance session).
      remainingMs: p.has_expired && !live ? 0 : remaining,
      usedMs: p.time_used_ms + (running && j === i ? elapsed : 0),
      isActive: p.is_active,
      hasExpired: p.has_expired,
    };
  });
}

/** One participant's clock at `nowMs`, or `undefined` when it is not in the session. */
export function clockOf(state: SyncState, participantId: string, nowMs: number): Clock | undefined {
  return clocks(state, nowMs).find((c) => c.participantId === participantId.toLowerCase());
}

/**
 * A participant's remaining time at `nowMs` (ms): 0 once the server marked it
 * out of time (`has_expired`); `undefined` when it is not in the session.
 */
export function remainingMs(state: SyncState, participantId: string, nowMs: number): number | undefined {
  return clockOf(state, participantId, nowMs)?.remainingMs;
}
