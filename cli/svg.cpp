#include "cli/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <tuple>

namespace masktune::cli::svg {
namespace {

// The chart's plot area inside its width x height.
struct Frame {
  double left = 74, right = 16, top = 34, bottom = 52;
};

// Maps data to pixels along one axis; `lo`, `hi` in axis units (log10 for a log axis).
struct Scale {
  double lo = 0, hi = 1, from = 0, to = 1;
  bool log = false;
  bool ok(double v) const { return std::isfinite(v) && (!log || v > 0); }
  double operator()(double v) const {
    const double u = log ? std::log10(v) : v;
    return from + (u - lo) / (hi - lo) * (to - from);
  }
};

std::string Fixed(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// The data range of one axis, padded; a single value gets a range around it.
std::pair<double, double> Domain(std::vector<double> values, bool log) {
  std::vector<double> u;
  for (double v : values)
    if (std::isfinite(v) && (!log || v > 0)) u.push_back(log ? std::log10(v) : v);
  if (u.empty()) return log ? std::pair{-2.0, 0.0} : std::pair{0.0, 1.0};
  double lo = *std::min_element(u.begin(), u.end());
  double hi = *std::max_element(u.begin(), u.end());
  if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) {
    const double pad = log ? 0.5 : (std::fabs(lo) > 0 ? std::fabs(lo) * 0.1 : 0.5);
    return {lo - pad, hi + pad};
  }
  const double pad = (hi - lo) * 0.06;
  return {lo - pad, hi + pad};
}

// Tick positions (axis units) and labels.
std::vector<std::pair<double, std::string>> Ticks(double lo, double hi, bool log) {
  std::vector<std::pair<double, std::string>> out;
  if (log) {
    for (double k = std::ceil(lo); k <= hi + 1e-9; k += 1) out.push_back({k, Num(std::pow(10, k))});
    if (out.size() < 3) {
      out.clear();
      for (double k = std::floor(lo); k <= hi + 1e-9; k += 1)
        for (double m : {1.0, 2.0, 5.0}) {
          const double u = k + std::log10(m);
          if (u >= lo - 1e-9 && u <= hi + 1e-9) out.push_back({u, Num(std::pow(10, u))});
        }
    }
    if (out.size() < 2) out = {{lo, Num(std::pow(10, lo))}, {hi, Num(std::pow(10, hi))}};
    return out;
  }
  const double raw = (hi - lo) / 5;
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    const double v = std::fabs(t) < step * 1e-9 ? 0.0 : t;
    out.push_back({v, Num(v)});
  }
  return out;
}

std::string Text(double x, double y, const std::string& text, const std::string& cls,
                 const std::string& anchor = "middle", const std::string& extra = "") {
  return "<text x=\"" + Fixed(x) + "\" y=\"" + Fixed(y) + "\" class=\"" + cls +
         "\" text-anchor=\"" + anchor + "\"" + extra + ">" + Escape(text) + "</text>";
}

std::string Diamond(double x, double y, double r) {
  return "M" + Fixed(x) + " " + Fixed(y - r) + " L" + Fixed(x + r) + " " + Fixed(y) + " L" +
         Fixed(x) + " " + Fixed(y + r) + " L" + Fixed(x - r) + " " + Fixed(y) + " Z";
}

// Legend entries in rows under the title; returns the markup and the height used.
std::pair<std::string, double> Legend(const std::vector<std::pair<std::string, size_t>>& items,
                                      const std::string& line, bool best, bool front, double width,
                                      double y0) {
  struct Item {
    std::string text, swatch;
  };
  std::vector<Item> all;
  for (const auto& [text, series] : items)
    all.push_back(
        {text, "<rect width=\"10\" height=\"10\" y=\"-9\" fill=\"" + Colour(series) + "\"/>"});
  if (!line.empty())
    all.push_back({line, "<path d=\"M0 -4 H12\" class=\"line best-so-far\" stroke=\"#000\"/>"});
  if (front)
    all.push_back({"Pareto front", "<path d=\"M0 -4 H10\" class=\"front-line\" stroke=\"#000\"/>"});
  if (best)
    all.push_back({"best trial", "<path d=\"" + Diamond(5, -4, 5) + "\" class=\"best-mark\"/>"});
  if (all.empty()) return {"", 0};
  std::string out = "<g class=\"legend\">";
  double x = 74, y = y0;
  for (const Item& it : all) {
    const double w = 18 + 6.6 * static_cast<double>(it.text.size()) + 14;
    if (x + w > width - 8 && x > 74) x = 74, y += 16;
    out += "<g transform=\"translate(" + Fixed(x) + "," + Fixed(y) + ")\">" + it.swatch +
           Text(15, 0, it.text, "legend-text", "start") + "</g>";
    x += w;
  }
  out += "</g>";
  return {out, y - y0 + 16};
}

}  // namespace

const std::string& Colour(size_t i) {
  static const std::vector<std::string> kOkabeIto = {"#0072B2", "#E69F00", "#009E73", "#D55E00",
                                                     "#CC79A7", "#56B4E9", "#F0E442", "#000000"};
  return kOkabeIto[i % kOkabeIto.size()];
}

std::string Escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        // XML 1.0 allows no control characters but tab, newline and return.
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
          out += ' ';
        else
          out += static_cast<char>(c);
    }
  }
  return out;
}

std::string Num(double x) {
  if (std::isnan(x)) return "-";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.4g", x);
  return buf;
}

std::string Render(const Chart& c) {
  Frame f;
  const double W = c.width, H = c.height;
  bool best = false, front = false;
  for (const Point& p : c.points) best |= p.best;
  for (const Line& l : c.lines) front |= l.cls == "front";
  auto [legend, legend_h] = Legend(c.legend, c.line_legend, best, front, W, f.top + 4);
  f.top += legend_h;
  const bool xcat = !c.x.categories.empty(), ycat = !c.y.categories.empty();
  std::vector<double> xs, ys;
  for (const Point& p : c.points) xs.push_back(p.x), ys.push_back(p.y);
  for (const Line& l : c.lines)
    for (const auto& [x, y] : l.points) xs.push_back(x), ys.push_back(y);
  Scale sx, sy;
  sx.log = c.x.log && !xcat;
  sy.log = c.y.log && !ycat;
  std::tie(sx.lo, sx.hi) =
      xcat ? std::pair{-0.5, static_cast<double>(c.x.categories.size()) - 0.5} : Domain(xs, sx.log);
  std::tie(sy.lo, sy.hi) =
      ycat ? std::pair{-0.5, static_cast<double>(c.y.categories.size()) - 0.5} : Domain(ys, sy.log);
  sx.from = f.left, sx.to = W - f.right;
  sy.from = H - f.bottom, sy.to = f.top;

  int drawn = 0;
  for (const Point& p : c.points) drawn += sx.ok(p.x) && sy.ok(p.y);
  std::string out =
      "<figure class=\"chart\" data-kind=\"" + Escape(c.kind) + "\" data-stack=\"" +
      Escape(c.stack) + "\"" + (c.param.empty() ? "" : " data-param=\"" + Escape(c.param) + "\"") +
      " data-points=\"" + std::to_string(drawn) + "\" style=\"width:" + Fixed(W) + "px\">";
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " + Fixed(W) + " " + Fixed(H) +
         "\" width=\"" + Fixed(W) + "\" height=\"" + Fixed(H) + "\" role=\"img\" aria-label=\"" +
         Escape(c.title) + "\">";
  out += Text(f.left, 18, c.title, "chart-title", "start");
  out += legend;
  // Plot area, grid and ticks.
  out += "<rect class=\"plot\" x=\"" + Fixed(f.left) + "\" y=\"" + Fixed(f.top) + "\" width=\"" +
         Fixed(W - f.left - f.right) + "\" height=\"" + Fixed(H - f.top - f.bottom) + "\"/>";
  auto axis_ticks = [&](const Axis& a, const Scale& s, bool cat) {
    std::vector<std::pair<double, std::string>> t;
    if (cat) {
      for (size_t i = 0; i < a.categories.size(); ++i)
        t.push_back({static_cast<double>(i), a.categories[i]});
    } else {
      t = Ticks(s.lo, s.hi, s.log);
    }
    return t;
  };
  auto unit = [](const Scale& s, double u) { return s.log ? std::pow(10, u) : u; };
  out += "<g class=\"ticks\">";
  for (const auto& [u, label] : axis_ticks(c.x, sx, xcat)) {
    const double px = sx(unit(sx, u));
    out += "<path class=\"grid\" d=\"M" + Fixed(px) + " " + Fixed(f.top) + " V" +
           Fixed(H - f.bottom) + "\"/>";
    out += Text(px, H - f.bottom + 15, label, "tick");
  }
  for (const auto& [u, label] : axis_ticks(c.y, sy, ycat)) {
    const double py = sy(unit(sy, u));
    out += "<path class=\"grid\" d=\"M" + Fixed(f.left) + " " + Fixed(py) + " H" +
           Fixed(W - f.right) + "\"/>";
    out += Text(f.left - 6, py + 4, label, "tick", "end");
  }
  out += "</g>";
  out += Text((f.left + W - f.right) / 2, H - 12, c.x.label + (sx.log ? ", log scale" : ""),
              "axis-label");
  const double ymid = (f.top + H - f.bottom) / 2;
  out += Text(16, ymid, c.y.label + (sy.log ? ", log scale" : ""), "axis-label", "middle",
              " transform=\"rotate(-90 16 " + Fixed(ymid) + ")\"");
  // Lines under the points.
  for (const Line& l : c.lines) {
    std::string d;
    bool first = true;
    for (const auto& [x, y] : l.points) {
      if (!sx.ok(x) || !sy.ok(y)) continue;
      const double px = sx(x), py = sy(y);
      if (first)
        d += "M" + Fixed(px) + " " + Fixed(py);
      else if (l.step)
        d += " H" + Fixed(px) + " V" + Fixed(py);
      else
        d += " L" + Fixed(px) + " " + Fixed(py);
      first = false;
    }
    if (d.empty()) continue;
    out += "<path class=\"line " + Escape(l.cls) + (l.cls == "front" ? " front-line" : "") +
           "\" d=\"" + d + "\" stroke=\"" + Colour(l.series) + "\"" +
           (l.dashed ? " stroke-dasharray=\"5 3\"" : "") + "/>";
  }
  // Points, then the best marks on top.
  out += "<g class=\"points\">";
  for (const Point& p : c.points) {
    if (!sx.ok(p.x) || !sy.ok(p.y)) continue;
    out += "<circle class=\"pt" + std::string(p.front ? " front" : "") + "\" cx=\"" +
           Fixed(sx(p.x)) + "\" cy=\"" + Fixed(sy(p.y)) + "\" r=\"4.5\" fill=\"" +
           Colour(p.series) + "\" data-trial=\"" + std::to_string(p.trial) + "\"><title>" +
           Escape(p.title) + "</title></circle>";
  }
  for (const Point& p : c.points) {
    if (!p.best || !sx.ok(p.x) || !sy.ok(p.y)) continue;
    out += "<path class=\"best\" data-trial=\"" + std::to_string(p.trial) + "\" d=\"" +
           Diamond(sx(p.x), sy(p.y), 9) + "\"><title>best: " + Escape(p.title) + "</title></path>";
  }
  out += "</g>";
  if (drawn == 0 && !c.empty_note.empty())
    out += Text((f.left + W - f.right) / 2, ymid, c.empty_note, "empty-note");
  out += "</svg>";
  if (!c.caption.empty()) out += "<figcaption>" + Escape(c.caption) + "</figcaption>";
  out += "</figure>";
  return out;
}

std::string RenderBars(const std::string& kind, const std::string& stack, const std::string& title,
                       const std::string& axis_label, const std::vector<Bar>& bars,
                       const std::string& caption) {
  const double W = 600, left = 220, right = 60, top = 34, row = 26;
  const double H = top + row * static_cast<double>(bars.size()) + 44;
  std::string out = "<figure class=\"chart\" data-kind=\"" + Escape(kind) + "\" data-stack=\"" +
                    Escape(stack) + "\" data-points=\"0\" style=\"width:" + Fixed(W) + "px\">";
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " + Fixed(W) + " " + Fixed(H) +
         "\" width=\"" + Fixed(W) + "\" height=\"" + Fixed(H) + "\" role=\"img\" aria-label=\"" +
         Escape(title) + "\">";
  out += Text(16, 18, title, "chart-title", "start");
  const double span = W - left - right;
  out += "<g class=\"ticks\">";
  for (double t : {0.0, 0.25, 0.5, 0.75, 1.0}) {
    const double px = left + t * span;
    out +=
        "<path class=\"grid\" d=\"M" + Fixed(px) + " " + Fixed(top) + " V" + Fixed(H - 44) + "\"/>";
    out += Text(px, H - 30, Num(t), "tick");
  }
  out += "</g>";
  out += Text(left + span / 2, H - 10, axis_label, "axis-label");
  for (size_t i = 0; i < bars.size(); ++i) {
    const Bar& b = bars[i];
    const double y = top + row * static_cast<double>(i) + 4;
    const double v = std::clamp(std::isfinite(b.value) ? b.value : 0.0, 0.0, 1.0);
    out += Text(left - 8, y + 13, b.label, "tick", "end");
    out += "<rect class=\"bar\" x=\"" + Fixed(left) + "\" y=\"" + Fixed(y) + "\" width=\"" +
           Fixed(std::max(v * span, 1.0)) + "\" height=\"" + Fixed(row - 8) + "\" fill=\"" +
           Colour(0) + "\" data-label=\"" + Escape(b.label) + "\" data-value=\"" + Num(b.value) +
           "\"><title>" + Escape(b.title) + "</title></rect>";
    out += Text(left + v * span + 6, y + 13, Num(b.value), "tick", "start");
  }
  out += "</svg>";
  if (!caption.empty()) out += "<figcaption>" + Escape(caption) + "</figcaption>";
  out += "</figure>";
  return out;
}

}  // namespace masktune::cli::svg
