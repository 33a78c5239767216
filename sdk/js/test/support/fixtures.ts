/** Session bodies the tests share. */
import type { CreateSessionBody } from "../../src/index.js";
import { uuid } from "./stack.js";

/** A two-player chess clock (Fischer increment 2 s), pending until started. */
export function chess(sessionId = uuid(), bankMs = 60_000): CreateSessionBody & { participants: { participant_id: string }[] } {
  return {
    session_id: sessionId,
    sync_mode: "per_participant",
    total_time_ms: bankMs,
    increment_ms: 2_000,
    participants: [
      { participant_id: uuid(), participant_index: 0, total_time_ms: bankMs },
      { participant_id: uuid(), participant_index: 1, total_time_ms: bankMs },
    ],
  };
}
