/* core/eval.h: small kernels of the evaluation protocols (kNN lives in knn.h):
 * top-k accuracy of score rows.  (The linear probe's shuffled mini-batches are gathered by
 * tensor_gather_rows_, core/tensor.h.) */
#ifndef MOCO_EVAL_H
#define MOCO_EVAL_H

#include <stdint.h>

/* scores (M, C) and labels (M) holding class numbers in [0, C).  For each of the nks values
 * in ks, correct[j] = the number of rows whose label is among the ks[j] best-scored classes
 * (ties rank the smaller class first, as a stable descending sort).  Returns 0, or -1 when
 * a label is out of range or an argument is invalid. */
int eval_topk_correct(int64_t *correct, const float *scores, const int64_t *labels, int64_t M, int C, const int *ks,
                      int nks);

#endif
