#include "engine/mask.h"

#include <algorithm>
#include <cassert>

namespace masktune {

Mask Mask::Dense(const MaskShape& shape, std::vector<float> values) {
  assert(static_cast<int64_t>(values.size()) == shape.rows() * shape.keys);
  Mask m(shape, Form::kDense);
  m.dense_ = std::move(values);
  return m;
}

Mask Mask::Sparse(const MaskShape& shape, std::vector<int64_t> row_ptr, std::vector<int32_t> cols,
                  std::vector<float> values) {
  assert(static_cast<int64_t>(row_ptr.size()) == shape.rows() + 1);
  assert(cols.size() == values.size());
  Mask m(shape, Form::kSparse);
  m.row_ptr_ = std::move(row_ptr);
  m.cols_ = std::move(cols);
  m.values_ = std::move(values);
  return m;
}

Mask Mask::FromRowIndices(const MaskShape& shape, const std::vector<int32_t>& indices,
                          int64_t per_row, float value) {
  std::vector<int64_t> row_ptr(static_cast<size_t>(shape.rows() + 1));
  for (int64_t r = 0; r <= shape.rows(); ++r) row_ptr[r] = r * per_row;
  return Sparse(shape, std::move(row_ptr), indices, std::vector<float>(indices.size(), value));
}

Mask Mask::FromRows(const MaskShape& shape, const std::vector<std::vector<int32_t>>& rows,
                    float value) {
  std::vector<std::vector<float>> values;
  values.reserve(rows.size());
  for (const auto& r : rows) values.emplace_back(r.size(), value);
  return FromRows(shape, rows, values);
}

Mask Mask::FromRows(const MaskShape& shape, const std::vector<std::vector<int32_t>>& rows,
                    const std::vector<std::vector<float>>& values) {
  assert(static_cast<int64_t>(rows.size()) == shape.rows() && values.size() == rows.size());
  std::vector<int64_t> row_ptr(1, 0);
  std::vector<int32_t> cols;
  std::vector<float> vals;
  for (size_t r = 0; r < rows.size(); ++r) {
    cols.insert(cols.end(), rows[r].begin(), rows[r].end());
    vals.insert(vals.end(), values[r].begin(), values[r].end());
    row_ptr.push_back(static_cast<int64_t>(cols.size()));
  }
  return Sparse(shape, std::move(row_ptr), std::move(cols), std::move(vals));
}

void Mask::ExpandRow(int64_t row, float* out, int64_t begin, int64_t end) const {
  const int64_t n = shape_.keys;
  if (form_ == Form::kDense) {
    std::copy(dense_.data() + row * n + begin, dense_.data() + row * n + end, out);
    return;
  }
  std::fill_n(out, end - begin, form_ == Form::kFull ? 1.0f : 0.0f);
  if (form_ == Form::kSparse) {
    const int32_t* first = cols_.data() + row_ptr_[row];
    const int32_t* last = cols_.data() + row_ptr_[row + 1];
    for (const int32_t* c = std::lower_bound(first, last, begin); c != last && *c < end; ++c)
      out[*c - begin] = values_[c - cols_.data()];
  }
}

Mask Mask::Merge(const Mask& other) const {
  assert(shape_ == other.shape_);
  if (is_full() || other.is_full()) return Full(shape_);
  if (other.is_empty()) return *this;
  if (is_empty()) return other;
  const int64_t rows = shape_.rows(), n = shape_.keys;
  if (form_ == Form::kSparse && other.form_ == Form::kSparse) {
    std::vector<int64_t> row_ptr(static_cast<size_t>(rows + 1), 0);
    std::vector<int32_t> cols;
    std::vector<float> vals;
    cols.reserve(cols_.size() + other.cols_.size());
    vals.reserve(cols_.size() + other.cols_.size());
    for (int64_t r = 0; r < rows; ++r) {
      int64_t a = row_ptr_[r], ae = row_ptr_[r + 1];
      int64_t b = other.row_ptr_[r], be = other.row_ptr_[r + 1];
      while (a < ae || b < be) {
        if (b == be || (a < ae && cols_[a] < other.cols_[b])) {
          cols.push_back(cols_[a]);
          vals.push_back(values_[a++]);
        } else if (a == ae || other.cols_[b] < cols_[a]) {
          cols.push_back(other.cols_[b]);
          vals.push_back(other.values_[b++]);
        } else {
          cols.push_back(cols_[a]);
          vals.push_back(std::min(values_[a++] + other.values_[b++], 1.0f));
        }
      }
      row_ptr[r + 1] = static_cast<int64_t>(cols.size());
    }
    return Sparse(shape_, std::move(row_ptr), std::move(cols), std::move(vals));
  }
  // Either side dense: the result is dense.
  const Mask& d = form_ == Form::kDense ? *this : other;
  const Mask& o = form_ == Form::kDense ? other : *this;
  std::vector<float> out = d.dense_;
  if (o.form_ == Form::kDense) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = std::clamp(out[i] + o.dense_[i], 0.0f, 1.0f);
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t e = o.row_ptr_[r]; e < o.row_ptr_[r + 1]; ++e) {
        float& x = out[static_cast<size_t>(r * n + o.cols_[e])];
        x = std::clamp(x + o.values_[e], 0.0f, 1.0f);
      }
    }
  }
  return Dense(shape_, std::move(out));
}

template <typename Keep>
Mask Mask::Filter(Keep&& keep) const {
  const int64_t rows = shape_.rows(), n = shape_.keys;
  if (form_ == Form::kDense) {
    std::vector<float> out = dense_;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j)
        if (!keep(r, j)) out[static_cast<size_t>(r * n + j)] = 0.0f;
    return Dense(shape_, std::move(out));
  }
  std::vector<int64_t> row_ptr(static_cast<size_t>(rows + 1), 0);
  std::vector<int32_t> cols;
  std::vector<float> vals;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t e = row_ptr_[r]; e < row_ptr_[r + 1]; ++e) {
      if (keep(r, cols_[e])) {
        cols.push_back(cols_[e]);
        vals.push_back(values_[e]);
      }
    }
    row_ptr[r + 1] = static_cast<int64_t>(cols.size());
  }
  return Sparse(shape_, std::move(row_ptr), std::move(cols), std::move(vals));
}

Mask Mask::ClearAfterQuery() const {
  if (is_empty() || is_full()) return *this;
  return Filter([&](int64_t r, int64_t j) { return j <= shape_.position_of(r); });
}

Mask Mask::KeepAllowed(const Tensor& attention_mask) const {
  if (is_empty() || is_full()) return *this;
  const float* am = attention_mask.data();
  const int64_t q = shape_.queries, n = shape_.keys;
  return Filter([&](int64_t r, int64_t j) {
    const int64_t b = shape_.batch_of(r), i = shape_.query_of(r);
    return am[(b * q + i) * n + j] >= 0.0f;
  });
}

int64_t Mask::CountNonzero() const {
  switch (form_) {
    case Form::kEmpty:
      return 0;
    case Form::kFull:
      return shape_.rows() * shape_.keys;
    case Form::kDense:
      return std::count_if(dense_.begin(), dense_.end(), [](float x) { return x != 0.0f; });
    case Form::kSparse:
      return static_cast<int64_t>(cols_.size());
  }
  return 0;
}

double Mask::Density() const {
  const int64_t total = shape_.rows() * shape_.keys;
  return total == 0 ? 0.0 : static_cast<double>(CountNonzero()) / static_cast<double>(total);
}

Tensor Mask::ToDense() const {
  Tensor t({shape_.batch, shape_.heads, shape_.queries, shape_.keys});
  for (int64_t r = 0; r < shape_.rows(); ++r) ExpandRow(r, t.data() + r * shape_.keys);
  return t;
}

}  // namespace masktune
