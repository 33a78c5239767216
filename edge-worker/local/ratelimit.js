// Local stand-in for Cloudflare's Rate Limiting binding, for plain `workerd`
// only (scripts/workerd.sh wires it in as a wrapped binding; `wrangler dev`
// and Cloudflare bring their own). Same call shape: `limit({key})` resolves
// to `{success}`. A fixed window of `period` seconds per key, in memory.
class Ratelimit {
  constructor(limit, periodSeconds) {
    this.max = limit;
    this.periodMs = periodSeconds * 1000;
    this.windows = new Map(); // key -> {window, count}
  }

  async limit({ key = "" } = {}) {
    const window = Math.floor(Date.now() / this.periodMs);
    let entry = this.windows.get(key);
    if (entry === undefined || entry.window !== window) {
      if (this.windows.size >= 100000) this.windows.clear(); // stays bounded
      entry = { window, count: 0 };
      this.windows.set(key, entry);
    }
    entry.count += 1;
    return { success: entry.count <= this.max };
  }
}

export default function (env) {
  return new Ratelimit(Number(env.limit), Number(env.period));
}
