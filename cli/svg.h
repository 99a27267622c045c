// File: cli/svg.h
//
// Charts drawn as inline SVG for the HTML report and the dashboard: a
// scatter plot with lines (linear, log or categorical axes, ticks, labels),
// and a horizontal bar chart. The markup is well-formed XML (XHTML-
// compatible: only the &amp; &lt; &gt; &quot; entities, every element
// closed), so a strict XML parser reads it. Colours: the Okabe-Ito palette,
// safe for the common colour-vision deficiencies.
// Conventions the tests rely on: every data point is one <circle> (nothing
// else in a chart is a circle), with class "pt" (plus "front" for a Pareto-
// front member) and data-trial="ID"; each carries a <title> (the tooltip).
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace masktune::cli::svg {

// Okabe-Ito (Okabe and Ito 2008), black last: the colour of series i.
const std::string& Colour(size_t i);

// Text safe inside an element or a double-quoted attribute.
std::string Escape(const std::string& text);

// A number with 4 significant digits ("%.4g"); "-" for NaN.
std::string Num(double x);

struct Axis {
  std::string label;                    // with its unit: "density (fraction of keys attended)"
  bool log = false;                     // log10 scale (positive values only)
  std::vector<std::string> categories;  // non-empty: a categorical axis, value i at slot i
};

struct Point {
  double x = 0, y = 0;
  size_t series = 0;  // colour
  int64_t trial = -1;
  bool front = false;
  bool best = false;  // marked by a diamond around the point
  std::string title;  // tooltip
};

struct Line {
  std::vector<std::pair<double, double>> points;  // drawn in order
  size_t series = 0;
  bool step = false;  // horizontal then vertical between points (a Pareto front, a running best)
  bool dashed = false;
  std::string cls;  // "front", "best-so-far"
};

struct Chart {
  std::string kind;   // data-kind of the figure: density, history, slice, ...
  std::string stack;  // data-stack ("" for every stack together)
  std::string param;  // data-param (slice plots)
  std::string title, caption;
  Axis x, y;
  std::vector<Point> points;
  std::vector<Line> lines;
  std::vector<std::pair<std::string, size_t>> legend;  // (text, series)
  std::string line_legend;  // the dashed line's entry (e.g. "best so far"), if any
  std::string empty_note;   // shown when there is no point
  int width = 580, height = 370;
};

// The chart as <figure class="chart" data-kind data-stack data-points><svg>...</svg>
// <figcaption>...</figcaption></figure>.
std::string Render(const Chart& chart);

struct Bar {
  std::string label;
  double value = 0;  // in [0, 1]
  std::string title;
};

// Horizontal bars in [0, 1] (parameter importance), one <rect class="bar"
// data-label data-value> each, as a <figure class="chart" data-kind=kind>.
std::string RenderBars(const std::string& kind, const std::string& stack, const std::string& title,
                       const std::string& axis_label, const std::vector<Bar>& bars,
                       const std::string& caption);

}  // namespace masktune::cli::svg
