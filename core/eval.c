/* core/eval.c: top-k accuracy counting (see eval.h). */
#include "eval.h"

#include <math.h>

#include "error.h"

int eval_topk_correct(int64_t *correct, const float *scores, const int64_t *labels, int64_t M, int C, const int *ks,
                      int nks) {
    if (M < 0 || C < 1 || nks < 0) return moco_error("topk_correct: invalid sizes (M=%lld C=%d)", (long long)M, C);
    for (int j = 0; j < nks; j++) {
        if (ks[j] < 1) return moco_error("topk_correct: k = %d must be at least 1", ks[j]);
        correct[j] = 0;
    }
    for (int64_t i = 0; i < M; i++) {
        if (labels[i] < 0 || labels[i] >= C)
            return moco_error("topk_correct: label %lld of row %lld is not a class in [0, %d)", (long long)labels[i],
                              (long long)i + 1, C);
        const float *row = scores + i * C;
        int label = (int)labels[i];
        float s = row[label];
        /* the label's rank = the classes placed before it */
        int rank = 0;
        for (int c = 0; c < C; c++) rank += row[c] > s || (row[c] == s && c < label);
        for (int j = 0; j < nks; j++) correct[j] += rank < ks[j];
    }
    return 0;
}
