// File: engine/mask.h
//
// A Mask says, for every (batch, head, query) row and every key, whether the
// key is used and with which probability it was kept: 0 = not used, p in
// (0, 1] = used, kept with probability p (deterministic maskers write 1).
// Shape (batch, heads, queries, keys). Two forms hold entries: dense (one
// float per entry) and sparse (per-row sorted key indices with their values,
// CSR). "Full" (every key, p = 1) and "empty" (no masker has added anything
// yet) are flags, not arrays. A Mask is an immutable value: every operation
// returns a new Mask. Thread-safety: const methods may run concurrently.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace masktune {

struct MaskShape {
  int64_t batch = 0, heads = 0, queries = 0, keys = 0;
  int64_t rows() const { return batch * heads * queries; }
  // Query index (0 .. queries-1) of a row; rows are ordered (batch, head, query).
  int64_t query_of(int64_t row) const { return row % queries; }
  int64_t batch_of(int64_t row) const { return row / (heads * queries); }
  // Absolute position of the row's query among the keys: keys - queries + i.
  int64_t position_of(int64_t row) const { return keys - queries + query_of(row); }
  bool operator==(const MaskShape&) const = default;
};

class Mask {
 public:
  enum class Form { kEmpty, kFull, kDense, kSparse };

  static Mask Empty(const MaskShape& shape) { return Mask(shape, Form::kEmpty); }
  static Mask Full(const MaskShape& shape) { return Mask(shape, Form::kFull); }
  // `values` has shape.rows() * shape.keys entries in [0, 1].
  static Mask Dense(const MaskShape& shape, std::vector<float> values);
  // CSR: row r holds cols[row_ptr[r] .. row_ptr[r+1]), strictly increasing,
  // with values in (0, 1]. row_ptr has shape.rows() + 1 entries.
  static Mask Sparse(const MaskShape& shape, std::vector<int64_t> row_ptr,
                     std::vector<int32_t> cols, std::vector<float> values);
  // rows[r]: the sorted key indices of row r, each written with `value`.
  static Mask FromRows(const MaskShape& shape, const std::vector<std::vector<int32_t>>& rows,
                       float value);
  // The same with values[r][i] for key rows[r][i].
  static Mask FromRows(const MaskShape& shape, const std::vector<std::vector<int32_t>>& rows,
                       const std::vector<std::vector<float>>& values);
  // `per_row` sorted key indices per row, each written with `value`.
  static Mask FromRowIndices(const MaskShape& shape, const std::vector<int32_t>& indices,
                             int64_t per_row, float value);

  Form form() const { return form_; }
  const MaskShape& shape() const { return shape_; }
  bool is_full() const { return form_ == Form::kFull; }
  bool is_empty() const { return form_ == Form::kEmpty; }

  // Writes row `row` as `shape.keys` probabilities into `out` (full: ones, empty: zeros).
  void ExpandRow(int64_t row, float* out) const { ExpandRow(row, out, 0, shape_.keys); }
  // The same for keys [begin, end) only, into out[0 .. end - begin).
  void ExpandRow(int64_t row, float* out, int64_t begin, int64_t end) const;

  // The sparse form's row `row`: its kept keys (increasing) and their
  // probabilities, `size` of each. Only for form() == kSparse.
  struct RowEntries {
    const int32_t* cols;
    const float* values;
    int64_t size;
  };
  RowEntries SparseRow(int64_t row) const {
    return {cols_.data() + row_ptr_[row], values_.data() + row_ptr_[row],
            row_ptr_[row + 1] - row_ptr_[row]};
  }

  // Calls fn(key, p) for every kept key of `row` in increasing key order.
  // Full rows visit every key with p = 1; empty rows visit nothing.
  template <typename Fn>
  void ForEachKept(int64_t row, Fn&& fn) const {
    const int64_t n = shape_.keys;
    switch (form_) {
      case Form::kEmpty:
        return;
      case Form::kFull:
        for (int64_t j = 0; j < n; ++j) fn(j, 1.0f);
        return;
      case Form::kDense: {
        const float* p = dense_.data() + row * n;
        for (int64_t j = 0; j < n; ++j)
          if (p[j] > 0.0f) fn(j, p[j]);
        return;
      }
      case Form::kSparse:
        for (int64_t e = row_ptr_[row]; e < row_ptr_[row + 1]; ++e) fn(cols_[e], values_[e]);
        return;
    }
  }

  // The spec's merge: full wins; empty yields the other; else min(a + m, 1) per entry.
  Mask Merge(const Mask& other) const;
  // Clears keys after each row's query position (j > keys - queries + i).
  // Empty and full masks are returned unchanged.
  Mask ClearAfterQuery() const;
  // Zeroes entries whose additive attention mask (batch, 1, queries, keys) is
  // negative. Empty and full masks are returned unchanged.
  Mask KeepAllowed(const Tensor& attention_mask) const;

  int64_t CountNonzero() const;
  // Nonzero entries / all entries: 1 for full, 0 for empty.
  double Density() const;
  // The share of keys attention actually reads: Density(), except that an
  // empty final mask means dense attention (spec), so 1. What benchmarks and
  // `attend` report as density.
  double AttendedDensity() const { return is_empty() ? 1.0 : Density(); }
  // (batch, heads, queries, keys) probabilities: ones when full, zeros when empty.
  Tensor ToDense() const;

 private:
  Mask(const MaskShape& shape, Form form) : shape_(shape), form_(form) {}
  // Rebuilds the mask from a per-entry filter: keep(row, key) false clears it.
  template <typename Keep>
  Mask Filter(Keep&& keep) const;

  MaskShape shape_;
  Form form_;
  std::vector<float> dense_;      // kDense: rows * keys
  std::vector<int64_t> row_ptr_;  // kSparse: rows + 1
  std::vector<int32_t> cols_;     // kSparse
  std::vector<float> values_;     // kSparse
};

}  // namespace masktune
