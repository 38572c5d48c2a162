/* The load report: one JSON document with every figure, and an SVG beside it that plots
 * throughput over time and the ack-latency distribution. Hand-written SVG text, no
 * plotting library; it formats numbers it is given and never computes pass/fail. */
#include "load.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double report_per_s(uint64_t n, double s)
{
    return s > 0 ? (double)n / s : 0;
}

static cJSON *report_latency_json(const struct hist *h)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "p50", (double)hist_quantile(h, 0.50));
    cJSON_AddNumberToObject(o, "p90", (double)hist_quantile(h, 0.90));
    cJSON_AddNumberToObject(o, "p99", (double)hist_quantile(h, 0.99));
    cJSON_AddNumberToObject(o, "p999", (double)hist_quantile(h, 0.999));
    cJSON_AddNumberToObject(o, "max", (double)h->max);
    cJSON_AddNumberToObject(o, "mean", h->n ? round((double)h->sum / (double)h->n) : 0);
    cJSON_AddNumberToObject(o, "count", (double)h->n);
    return o;
}

int load_report_json(const struct load_result *r, const char *path, const char *svg_path)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    cJSON_AddBoolToObject(o, "ok", r->ok);
    if (r->error[0])
        cJSON_AddStringToObject(o, "error", r->error);
    cJSON_AddNumberToObject(o, "commits_submitted", (double)r->commits_submitted);
    cJSON_AddNumberToObject(o, "commits_acked", (double)r->commits_acked);
    cJSON_AddNumberToObject(o, "bytes_submitted", (double)r->bytes_submitted);
    cJSON_AddNumberToObject(o, "bytes_acked", (double)r->bytes_acked);
    cJSON_AddNumberToObject(o, "duration_s", round(r->duration_s * 1000) / 1000);
    cJSON_AddNumberToObject(o, "commits_per_s",
                            round(report_per_s(r->commits_acked, r->duration_s)));
    cJSON_AddNumberToObject(o, "bytes_per_s", round(report_per_s(r->bytes_acked, r->duration_s)));
    cJSON_AddNumberToObject(o, "mb_per_s",
                            round(report_per_s(r->bytes_acked, r->duration_s) / 1e4) / 100);
    cJSON_AddNumberToObject(o, "batches", (double)r->batches);
    cJSON_AddNumberToObject(
        o, "commits_per_batch",
        r->batches ? round((double)r->commits_acked / (double)r->batches * 10) / 10 : 0);
    cJSON_AddNumberToObject(o, "writes_saved",
                            r->commits_acked > r->batches ? (double)(r->commits_acked - r->batches)
                                                          : 0);
    cJSON_AddNumberToObject(o, "put_attempts", (double)r->put_attempts);
    cJSON_AddNumberToObject(o, "retries", (double)r->retries);
    cJSON_AddNumberToObject(o, "failures_retryable", (double)r->failures_retryable);
    cJSON_AddNumberToObject(o, "failures_fatal", (double)r->failures_fatal);
    cJSON_AddItemToObject(o, "ack_latency_us", report_latency_json(&r->ack_us));
    cJSON_AddItemToObject(o, "submit_wait_us", report_latency_json(&r->submit_wait_us));
    cJSON_AddNumberToObject(o, "out_of_order_acks", (double)r->out_of_order_acks);
    cJSON_AddNumberToObject(o, "unacked_commits", (double)r->unacked);
    cJSON_AddNumberToObject(o, "submit_errors", (double)r->submit_errors);
    cJSON_AddNumberToObject(o, "durable_seq", (double)r->durable_seq);
    cJSON_AddNumberToObject(o, "epoch", (double)r->epoch);
    cJSON_AddNumberToObject(o, "first_seq", (double)r->first_seq);
    cJSON_AddNumberToObject(o, "pool_opens", (double)r->pool_opens);
    cJSON_AddNumberToObject(o, "pool_reuses", (double)r->pool_reuses);
    if (r->spool) {
        cJSON *sp = cJSON_AddObjectToObject(o, "spool");
        cJSON_AddNumberToObject(sp, "local_seq", (double)r->local_seq);
        cJSON_AddNumberToObject(sp, "bytes", (double)r->spool_bytes);
        cJSON_AddNumberToObject(sp, "skipped_commits", (double)r->spool_skipped);
        cJSON_AddNumberToObject(sp, "reads", (double)r->spool_reads);
    }

    cJSON *run = cJSON_AddObjectToObject(o, "run");
    cJSON_AddNumberToObject(run, "producers", r->producers);
    cJSON_AddNumberToObject(run, "size_min", (double)r->size_min);
    cJSON_AddNumberToObject(run, "size_max", (double)r->size_max);
    cJSON_AddNumberToObject(run, "rate", r->rate);
    if (r->commits_target)
        cJSON_AddNumberToObject(run, "commits", (double)r->commits_target);
    else
        cJSON_AddNumberToObject(run, "duration_s", r->duration_target_s);
    cJSON_AddStringToObject(run, "endpoint", r->endpoint ? r->endpoint : "");
    cJSON_AddBoolToObject(run, "mock", r->mock);
    if (svg_path)
        cJSON_AddStringToObject(o, "svg", svg_path);

    /* Throughput per sample interval, for anyone who wants to re-plot it. */
    cJSON *series = cJSON_AddArrayToObject(o, "throughput");
    for (size_t i = 1; i < r->nsamples; i++) {
        const struct load_sample *a = &r->samples[i - 1], *b = &r->samples[i];
        double dt = b->t_s - a->t_s;
        cJSON *p = cJSON_CreateObject();
        cJSON_AddNumberToObject(p, "t_s", round(b->t_s * 1000) / 1000);
        cJSON_AddNumberToObject(p, "commits_per_s",
                                round(report_per_s(b->commits_durable - a->commits_durable, dt)));
        cJSON_AddNumberToObject(p, "mb_per_s",
                                round(report_per_s(b->bytes_durable - a->bytes_durable, dt) / 1e4) /
                                    100);
        cJSON_AddItemToArray(series, p);
    }

    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text)
        return -ENOMEM;
    int rc = 0;
    FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
    if (!f) {
        rc = -errno;
    } else {
        if (fprintf(f, "%s\n", text) < 0)
            rc = -EIO;
        if (f != stdout ? fclose(f) != 0 : fflush(f) != 0)
            rc = -EIO;
    }
    cJSON_free(text);
    return rc;
}

/* ---- SVG ------------------------------------------------------------------------------ */

#define SVG_W 960
#define SVG_PANEL_H 300
#define SVG_LEFT 80
#define SVG_RIGHT 30
#define SVG_TOP 50

/* A "nice" axis maximum (1, 2 or 5 times a power of ten) at or above v. */
static double report_nice_ceil(double v)
{
    if (v <= 0)
        return 1;
    double p = pow(10, floor(log10(v)));
    for (int i = 0; i < 3; i++) {
        double m = (double[]){1, 2, 5}[i] * p;
        if (m >= v)
            return m;
    }
    return 10 * p;
}

static void report_fmt_si(char *out, size_t n, double v)
{
    if (v >= 1e6)
        snprintf(out, n, "%.3gM", v / 1e6);
    else if (v >= 1e3)
        snprintf(out, n, "%.3gk", v / 1e3);
    else
        snprintf(out, n, "%.3g", v);
}

static void report_fmt_us(char *out, size_t n, double us)
{
    if (us >= 1e6)
        snprintf(out, n, "%.3g s", us / 1e6);
    else if (us >= 1e3)
        snprintf(out, n, "%.3g ms", us / 1e3);
    else
        snprintf(out, n, "%.3g µs", us);
}

static void report_svg_throughput(FILE *f, const struct load_result *r, int y0)
{
    int pw = SVG_W - SVG_LEFT - SVG_RIGHT, ph = SVG_PANEL_H - 90;
    int top = y0 + SVG_TOP;
    double tmax = r->nsamples ? r->samples[r->nsamples - 1].t_s : 1, ymax = 0;
    char lab[32];

    for (size_t i = 1; i < r->nsamples; i++) {
        double dt = r->samples[i].t_s - r->samples[i - 1].t_s;
        double c =
            report_per_s(r->samples[i].commits_durable - r->samples[i - 1].commits_durable, dt);
        if (c > ymax)
            ymax = c;
    }
    ymax = report_nice_ceil(ymax * 1.05);
    if (tmax <= 0)
        tmax = 1;
    fprintf(
        f,
        "<text x=\"%d\" y=\"%d\" class=\"h\">Throughput: commits made durable per second</text>\n",
        SVG_LEFT, y0 + 30);
    for (int i = 0; i <= 4; i++) {
        double v = ymax * i / 4;
        int y = top + ph - (int)(ph * i / 4);
        report_fmt_si(lab, sizeof(lab), v);
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" class=\"g\"/>\n", SVG_LEFT, y,
                SVG_LEFT + pw, y);
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"yl\">%s</text>\n", SVG_LEFT - 6, y + 4, lab);
    }
    double step = report_nice_ceil(tmax / 6);
    tmax = ceil(tmax / step) * step;
    for (double t = 0; t <= tmax + step / 2; t += step) {
        int x = SVG_LEFT + (int)(pw * t / tmax);
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"xl\">%g s</text>\n", x, top + ph + 18, t);
    }
    fprintf(f, "<polyline class=\"tp\" points=\"");
    for (size_t i = 1; i < r->nsamples; i++) {
        const struct load_sample *a = &r->samples[i - 1], *b = &r->samples[i];
        double c = report_per_s(b->commits_durable - a->commits_durable, b->t_s - a->t_s);
        double xa = SVG_LEFT + pw * a->t_s / tmax, xb = SVG_LEFT + pw * b->t_s / tmax;
        double y = top + ph - ph * c / ymax;
        fprintf(f, "%.1f,%.1f %.1f,%.1f ", xa, y, xb, y);
    }
    fprintf(f, "\"/>\n");
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"frame\"/>\n", SVG_LEFT,
            top, pw, ph);
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"xl\">time since the first submit</text>\n",
            SVG_LEFT + pw / 2, top + ph + 36);
}

static void report_svg_latency(FILE *f, const struct load_result *r, int y0)
{
    enum { NB = 40 }; /* 8 bins per decade from 1 µs to 100 s */
    int pw = SVG_W - SVG_LEFT - SVG_RIGHT, ph = SVG_PANEL_H - 90;
    int top = y0 + SVG_TOP;
    const struct hist *h = &r->ack_us;
    double bins[NB] = {0}, lo_dec = 0, hi_dec = 5; /* 10^0 .. 10^5 µs by default */
    char lab[32];

    if (h->n) {
        lo_dec = floor(log10(h->min > 0 ? (double)h->min : 1));
        hi_dec = ceil(log10((double)h->max + 1));
        if (hi_dec - lo_dec < 2)
            hi_dec = lo_dec + 2;
    }
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        if (!h->counts[i])
            continue;
        uint64_t lo, hi;
        hist_bucket_range(i, &lo, &hi);
        double mid = ((double)lo + (double)hi) / 2 + 0.5;
        int b = (int)((log10(mid) - lo_dec) / (hi_dec - lo_dec) * NB);
        b = b < 0 ? 0 : b >= NB ? NB - 1 : b;
        bins[b] += (double)h->counts[i];
    }
    double bmax = 0;
    for (int b = 0; b < NB; b++)
        if (bins[b] > bmax)
            bmax = bins[b];
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" class=\"h\">Ack latency per commit (submit to durable), "
            "%llu commits</text>\n",
            SVG_LEFT, y0 + 30, (unsigned long long)h->n);
    for (int b = 0; b < NB && bmax > 0; b++) {
        double x = SVG_LEFT + (double)pw * b / NB, w = (double)pw / NB - 1;
        double bh = ph * bins[b] / bmax;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"bar\"/>\n",
                x, top + ph - bh, w, bh);
    }
    for (int d = (int)lo_dec; d <= (int)hi_dec; d++) {
        double x = SVG_LEFT + pw * (d - lo_dec) / (hi_dec - lo_dec);
        report_fmt_us(lab, sizeof(lab), pow(10, d));
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"g\"/>\n", x, top, x,
                top + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" class=\"xl\">%s</text>\n", x, top + ph + 18, lab);
    }
    static const struct {
        double q;
        const char *name;
    } marks[] = {{0.50, "p50"}, {0.99, "p99"}, {0.999, "p99.9"}};
    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]) && h->n; i++) {
        double v = (double)hist_quantile(h, marks[i].q);
        double x = SVG_LEFT + pw * (log10(v + 0.5) - lo_dec) / (hi_dec - lo_dec);
        report_fmt_us(lab, sizeof(lab), v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"q\"/>\n", x, top, x,
                top + ph);
        bool right = x > SVG_LEFT + pw * 0.8; /* label left of the line near the edge */
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" class=\"ql\"%s>%s %s</text>\n", right ? x - 4 : x + 4,
                top + 14 + 14 * (int)i, right ? " text-anchor=\"end\"" : "", marks[i].name, lab);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"frame\"/>\n", SVG_LEFT,
            top, pw, ph);
    fprintf(
        f,
        "<text x=\"%d\" y=\"%d\" class=\"xl\">latency (log scale); bar height = commits</text>\n",
        SVG_LEFT + pw / 2, top + ph + 36);
}

int load_report_svg(const struct load_result *r, const char *path)
{
    FILE *f = fopen(path, "w");
    char a[32], b[32], c[32];
    if (!f)
        return -errno;
    int height = 2 * SVG_PANEL_H + 40;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<style>.h{font-size:15px;font-weight:bold}.g{stroke:#ddd}.frame{fill:none;"
            "stroke:#444}.yl{text-anchor:end}.xl{text-anchor:middle}.tp{fill:none;"
            "stroke:#1f77b4;stroke-width:2}.bar{fill:#ff7f0e}.q{stroke:#d62728;"
            "stroke-dasharray:4 3}.ql{fill:#d62728}.s{fill:#555}</style>\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            SVG_W, height, SVG_W, height);
    report_fmt_si(a, sizeof(a), report_per_s(r->commits_acked, r->duration_s));
    snprintf(b, sizeof(b), "%.1f", report_per_s(r->bytes_acked, r->duration_s) / 1e6);
    report_fmt_si(c, sizeof(c), (double)r->batches);
    fprintf(f,
            "<text x=\"%d\" y=\"20\" class=\"s\">s3commit-load: %d producers, %llu-%llu byte "
            "commits, %.3g s: %s commits/s, %s MB/s, %s batches, %llu retries%s</text>\n",
            SVG_LEFT, r->producers, (unsigned long long)r->size_min,
            (unsigned long long)r->size_max, r->duration_s, a, b, c, (unsigned long long)r->retries,
            r->ok ? "" : " (FAILED)");
    report_svg_throughput(f, r, 20);
    report_svg_latency(f, r, 20 + SVG_PANEL_H);
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -EIO;
}
