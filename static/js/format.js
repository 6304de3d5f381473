// How every page writes counts and durations, so that one page never shows "54001" beside
// "54,001" (the templates use humanize's intcomma, which writes the same separators).
const Format = {
  // 54001 → "54,001"
  count(n) {
    return Number(n).toLocaleString("en-US");
  },
  // A duration in seconds, as long as it needs to be: "40 s", "3 min 20 s", "2 h 5 min".
  seconds(s) {
    if (s >= 3600) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
    if (s >= 60) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.ceil(s)} s`;
  },
};
