// Marp CLI settings for every deck; tools/slides.py passes this file explicitly.
// - emoji stay plain text: Marp would otherwise turn them into images fetched from a CDN, and
//   the built HTML must work offline, opened on its own;
// - a line break in the source is a space, as in any Markdown (Marp's default makes it <br>).
export default {
  themeSet: ['./theme'],
  html: false,
  options: {
    emoji: { shortcode: false, unicode: false },
    markdown: { breaks: false },
  },
}
