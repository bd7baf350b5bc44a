// How the operator page writes numbers, sizes and times. Rounding is half-up on the value
// scaled to the shown digits (Math.round), then printed with a fixed number of decimals.

/** ``x`` rounded half-up to ``digits`` decimals, as text (e.g. fixed(0.12345, 3) = "0.123"). */
export function fixed(x, digits) {
  const scale = 10 ** digits;
  return (Math.round(x * scale) / scale).toFixed(digits);
}

/** A fraction as a percentage with one decimal: 0.7125 -> "71.3 %". */
export function percent(x) {
  return `${(Math.round(x * 1000) / 10).toFixed(1)} %`;
}

/** A trust value in [0, 1] with three decimals. */
export function trust(x) {
  return fixed(x, 3);
}

/** Bytes as megabytes (10^6 bytes) with three decimals. */
export function megabytes(bytes) {
  return fixed(bytes / 1e6, 3);
}

/** A metric by its name: accuracies as percentages, durations (``*_s``) in seconds, else 4 decimals. */
export function metric(name, value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  if (name.endsWith("accuracy")) return percent(value);
  if (name.endsWith("_s")) return `${fixed(value, 1)} s`;
  return fixed(value, 4);
}

function parseTime(iso) {
  // the API's timestamps carry their zone; a bare one is UTC
  const zoned = /([zZ]|[+-]\d\d:?\d\d)$/.test(iso) ? iso : `${iso}Z`;
  return new Date(zoned);
}

/** An ISO timestamp as "YYYY-MM-DD HH:MM:SS" in UTC ("–" when absent). */
export function utc(iso) {
  if (!iso) return "–";
  const date = parseTime(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toISOString().slice(0, 19).replace("T", " ");
}

/** Seconds since the epoch as "HH:MM:SS" UTC. */
export function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toISOString().slice(11, 19);
}

/** Seconds between two ISO timestamps, one decimal ("–" while ``end`` is absent). */
export function duration(start, end) {
  if (!start || !end) return "–";
  return `${fixed((parseTime(end) - parseTime(start)) / 1000, 1)} s`;
}
