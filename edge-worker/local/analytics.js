// Local stand-in for a Workers Analytics Engine dataset binding, for plain
// `workerd` only (scripts/workerd.sh wires it in as a wrapped binding;
// Cloudflare brings the real one). Same call shape: `writeDataPoint(point)`,
// synchronous, nothing returned; the same limits (at most 1 index of at most
// 96 bytes, 20 blobs, 20 doubles, 16 KB of blobs), which throw here as the
// runtime's do. Each accepted point is printed as one JSON line
// `{"analytics_engine": {"dataset": ..., "indexes": [...], "blobs": [...],
// "doubles": [...]}}` on workerd's output, where the end-to-end tests read
// what the worker wrote.
class Dataset {
  constructor(dataset) {
    this.dataset = dataset;
  }

  writeDataPoint(point = {}) {
    const indexes = point.indexes ?? [];
    const blobs = point.blobs ?? [];
    const doubles = point.doubles ?? [];
    if (!Array.isArray(indexes) || indexes.length > 1) throw new TypeError("at most one index");
    if (indexes.some((i) => new TextEncoder().encode(String(i)).length > 96)) throw new TypeError("index over 96 bytes");
    if (!Array.isArray(blobs) || blobs.length > 20) throw new TypeError("at most 20 blobs");
    if (!Array.isArray(doubles) || doubles.length > 20) throw new TypeError("at most 20 doubles");
    if (doubles.some((d) => typeof d !== "number")) throw new TypeError("doubles are numbers");
    const size = blobs.reduce((n, b) => n + new TextEncoder().encode(String(b)).length, 0);
    if (size > 16 * 1024) throw new TypeError("blobs over 16 KB");
    console.log(JSON.stringify({ analytics_engine: { dataset: this.dataset, indexes, blobs, doubles } }));
  }
}

export default function (env) {
  return new Dataset(String(env.dataset));
}
