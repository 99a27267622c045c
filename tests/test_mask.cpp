#include <doctest/doctest.h>

#include "engine/mask.h"
#include "tests/helpers.h"

namespace masktune {
namespace {

const MaskShape kShape{1, 2, 1, 6};  // two rows of six keys

Mask SparseOf(std::vector<std::vector<int32_t>> rows, std::vector<std::vector<float>> vals) {
  std::vector<int64_t> ptr{0};
  std::vector<int32_t> cols;
  std::vector<float> v;
  for (size_t r = 0; r < rows.size(); ++r) {
    cols.insert(cols.end(), rows[r].begin(), rows[r].end());
    v.insert(v.end(), vals[r].begin(), vals[r].end());
    ptr.push_back(static_cast<int64_t>(cols.size()));
  }
  return Mask::Sparse(kShape, ptr, cols, v);
}

TEST_CASE("merge: full wins, empty yields the other") {
  const Mask s = SparseOf({{0}, {5}}, {{1}, {1}});
  CHECK(Mask::Empty(kShape).Merge(s).CountNonzero() == 2);
  CHECK(s.Merge(Mask::Empty(kShape)).CountNonzero() == 2);
  CHECK(s.Merge(Mask::Full(kShape)).is_full());
  CHECK(Mask::Full(kShape).Merge(Mask::Empty(kShape)).is_full());
  CHECK(Mask::Empty(kShape).Merge(Mask::Empty(kShape)).is_empty());
  CHECK(Mask::Full(kShape).Density() == 1.0);
  CHECK(Mask::Empty(kShape).Density() == 0.0);
}

TEST_CASE("merge adds probabilities and clamps at one, in every form") {
  const Mask a = SparseOf({{0, 2}, {1}}, {{0.25f, 1.0f}, {0.5f}});
  const Mask b = SparseOf({{0, 3}, {1}}, {{0.25f, 0.5f}, {0.75f}});
  std::vector<float> expect = {0.5f, 0, 1, 0.5f, 0, 0, 0, 1, 0, 0, 0, 0};
  const Mask sparse = a.Merge(b);
  CHECK(sparse.form() == Mask::Form::kSparse);
  CHECK(sparse.ToDense().vec() == expect);
  const Mask dense_b = Mask::Dense(kShape, b.ToDense().vec());
  CHECK(a.Merge(dense_b).form() == Mask::Form::kDense);
  CHECK(a.Merge(dense_b).ToDense().vec() == expect);
  CHECK(dense_b.Merge(a).ToDense().vec() == expect);
  CHECK(Mask::Dense(kShape, a.ToDense().vec()).Merge(dense_b).ToDense().vec() == expect);
  CHECK(sparse.Density() == doctest::Approx(4.0 / 12));
}

TEST_CASE("clearing after the query position keeps each query's past") {
  const MaskShape shape{1, 1, 3, 5};  // queries at positions 2, 3, 4
  const Mask full_rows = Mask::Dense(shape, std::vector<float>(15, 1.0f));
  const Tensor t = full_rows.ClearAfterQuery().ToDense();
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 5; ++j) CHECK(t.at(0, 0, i, j) == (j <= 2 + i ? 1.0f : 0.0f));
  CHECK(Mask::Empty(shape).ClearAfterQuery().is_empty());
  CHECK(Mask::Full(shape).ClearAfterQuery().is_full());
  std::vector<int32_t> idx = {0, 4, 0, 4, 0, 4};
  const Mask sparse = Mask::FromRowIndices(shape, idx, 2, 1.0f).ClearAfterQuery();
  CHECK(testing::KeptKeys(sparse, 0) == std::vector<int64_t>{0});
  CHECK(testing::KeptKeys(sparse, 2) == std::vector<int64_t>{0, 4});
}

TEST_CASE("keep-allowed zeroes keys the attention mask forbids") {
  const MaskShape shape{1, 2, 2, 4};
  const Tensor causal = testing::CausalMask(1, 2, 4);  // query 0 sees keys 0..2
  const Mask m = Mask::Dense(shape, std::vector<float>(16, 0.5f)).KeepAllowed(causal);
  CHECK(testing::KeptKeys(m, 0) == std::vector<int64_t>{0, 1, 2});
  CHECK(testing::KeptKeys(m, 3) == std::vector<int64_t>{0, 1, 2, 3});
  CHECK(m.CountNonzero() == 14);
}

TEST_CASE("row access agrees across forms") {
  const Mask s = SparseOf({{1, 4}, {}}, {{0.5f, 1.0f}, {}});
  std::vector<float> row(6);
  s.ExpandRow(0, row.data());
  CHECK(row == std::vector<float>{0, 0.5f, 0, 0, 1, 0});
  Mask::Full(kShape).ExpandRow(1, row.data());
  CHECK(row == std::vector<float>(6, 1.0f));
  CHECK(testing::KeptKeys(Mask::Dense(kShape, s.ToDense().vec()), 0) == std::vector<int64_t>{1, 4});
  CHECK(testing::KeptKeys(s, 1).empty());
  std::vector<float> part(3);
  s.ExpandRow(0, part.data(), 2, 5);  // keys 2, 3, 4
  CHECK(part == std::vector<float>{0, 0, 1.0f});
  Mask::Dense(kShape, s.ToDense().vec()).ExpandRow(0, part.data(), 1, 4);
  CHECK(part == std::vector<float>{0.5f, 0, 0});
}

}  // namespace
}  // namespace masktune
