/*
 * End-to-end latency at a fixed rate with librdkafka from C (scenario 4c of bench/suite.py):
 * the same measurement as `clients.py latency`, without Python in the loop, so less of the
 * figure is the client's own scheduling on a small machine.
 *
 *   latency --bootstrap B --topic T [--rate-mb 20] [--record-size 1024]
 *           [--warmup 5] [--duration 20] [--linger-ms 1]
 *
 * A producer thread stamps each value with the wall clock (ns, big-endian, first 8 bytes)
 * when it hands the record to librdkafka; the consumer (main thread), assigned to every
 * partition from the beginning, takes receive time - send time. Percentiles are over the
 * records sent during the measurement window, after the warm-up. Prints one JSON line
 * with the same keys as clients.py; exits 1 if records were lost or failed.
 *
 * It also splits the figure: librdkafka's own statistics (every second) give the p99 of
 * the time a record waits inside the producer before its request is written
 * ("int_latency": linger.ms and the client's timers) and of the produce round trip
 * ("rtt": request written to response read, the broker's part plus the wire); the JSON
 * carries the median over the window's seconds of each ("producer_queue_p99_ms",
 * "produce_rtt_p99_ms").
 *
 * Build (bench/run does): cc -O2 -o target/bench/latency bench/latency.c -lrdkafka -lpthread -lm
 */
#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Identical to LATENCY_PRODUCER_CONF / LATENCY_CONSUMER_CONF in clients.py. */
/* statistics.interval.ms: the split described above (librdkafka then also keeps histograms) */
/* linger.ms: 1 unless --linger-ms says otherwise (set in main) */
static const char *PRODUCER_CONF[][2] = {
    {"acks", "1"}, {"linger.ms", "1"}, {"statistics.interval.ms", "1000"}};
static const char *CONSUMER_CONF[][2] = {
    {"fetch.wait.max.ms", "10"}, {"fetch.min.bytes", "1"}, {"enable.auto.commit", "false"}};

struct args {
  const char *bootstrap, *topic;
  double rate_mb, warmup, duration;
  int record_size;
};

struct producer_result {
  int64_t t_start_ns, t_end_ns;
  atomic_long sent;
  atomic_long errors;
  atomic_int done;
  double elapsed;
  /* per-second p99s (µs) from librdkafka's statistics, inside the window */
  double queue_p99[4096], rtt_p99[4096];
  int stats;
};

static struct args A;
static struct producer_result P;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *detail) {
  printf("{\"error\": \"%s: %s\"}\n", what, detail);
  fflush(stdout);
  exit(1);
}

static rd_kafka_conf_t *conf_with(const char *conf[][2], size_t n) {
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  if (rd_kafka_conf_set(c, "bootstrap.servers", A.bootstrap, err, sizeof err) != RD_KAFKA_CONF_OK)
    die("config", err);
  for (size_t i = 0; i < n; i++)
    if (rd_kafka_conf_set(c, conf[i][0], conf[i][1], err, sizeof err) != RD_KAFKA_CONF_OK)
      die("config", err);
  return c;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  (void)opaque;
  if (m->err) atomic_fetch_add(&P.errors, 1);
}

/* The number after "key": inside the object that starts at obj (up to its closing brace). */
static double field_in(const char *obj, const char *key) {
  const char *end = strchr(obj, '}');
  const char *p = strstr(obj, key);
  return (p && end && p < end) ? atof(p + strlen(key)) : -1;
}

/* Statistics callback (producer thread, from rd_kafka_poll): the broker entry whose
 * int_latency histogram counted the most records is the one the topic's leader is on. */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
  (void)rk;
  (void)len;
  (void)opaque;
  int64_t now = now_ns(), lo = P.t_start_ns + (int64_t)(A.warmup * 1e9);
  if (now < lo + 1000000000LL || now > P.t_end_ns || P.stats >= 4096) return 0;
  const char *best = NULL;
  double best_cnt = 0;
  for (const char *p = strstr(json, "\"int_latency\":"); p; p = strstr(p + 1, "\"int_latency\":")) {
    double cnt = field_in(p, "\"cnt\":");
    if (cnt > best_cnt) best_cnt = cnt, best = p;
  }
  if (!best) return 0;
  const char *rtt = strstr(best, "\"rtt\":");
  if (!rtt) return 0;
  P.queue_p99[P.stats] = field_in(best, "\"p99\":");
  P.rtt_p99[P.stats] = field_in(rtt, "\"p99\":");
  P.stats++;
  return 0; /* librdkafka frees json */
}

static int cmp_f64(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median of n values, in ms from µs (-1 when there are none). */
static double median_ms(double *xs, int n) {
  if (n == 0) return -1;
  qsort(xs, n, sizeof *xs, cmp_f64);
  return (n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2) / 1e3;
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

static void *producer_main(void *unused) {
  (void)unused;
  char err[512];
  rd_kafka_conf_t *c = conf_with(PRODUCER_CONF, sizeof PRODUCER_CONF / sizeof *PRODUCER_CONF);
  rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
  rd_kafka_conf_set_stats_cb(c, on_stats);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
  if (!rk) die("producer", err);
  const struct rd_kafka_metadata *md;
  rd_kafka_topic_t *t = rd_kafka_topic_new(rk, A.topic, NULL);
  if (rd_kafka_metadata(rk, 0, t, &md, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR)
    die("producer", "no metadata");
  rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(t);

  char *value = malloc(A.record_size);
  memset(value, 'x', A.record_size);
  double rate = A.rate_mb * 1e6 / A.record_size; /* records/s */
  while (now_ns() < P.t_start_ns) sleep_us(1000);
  long sent = 0;
  double begin = mono_s();
  while (now_ns() < P.t_end_ns) {
    long due = (long)((mono_s() - begin) * rate);
    while (sent < due) {
      int64_t ts = now_ns();
      for (int i = 0; i < 8; i++) value[i] = (char)((uint64_t)ts >> (56 - 8 * i));
      rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(A.topic),
                                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                RD_KAFKA_V_VALUE(value, (size_t)A.record_size),
                                                RD_KAFKA_V_END);
      if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(rk, 1);
        continue;
      }
      if (e) die("produce", rd_kafka_err2str(e));
      sent++;
    }
    atomic_store(&P.sent, sent);
    rd_kafka_poll(rk, 0);
    sleep_us(500); /* the Python producer's pace: look every 0.5 ms */
  }
  P.elapsed = mono_s() - begin;
  rd_kafka_flush(rk, 60000);
  atomic_fetch_add(&P.errors, rd_kafka_outq_len(rk));
  atomic_store(&P.sent, sent);
  atomic_store(&P.done, 1);
  rd_kafka_destroy(rk);
  free(value);
  return NULL;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static double pct(const int64_t *xs, long n, double q) {
  long i = (long)ceil(q * n) - 1;
  return xs[i < 0 ? 0 : i] / 1e6;
}

static const char *flag(int argc, char **argv, const char *name, const char *dflt) {
  for (int i = 1; i + 1 < argc; i++)
    if (!strcmp(argv[i], name)) return argv[i + 1];
  return dflt;
}

int main(int argc, char **argv) {
  A.bootstrap = flag(argc, argv, "--bootstrap", NULL);
  A.topic = flag(argc, argv, "--topic", NULL);
  if (!A.bootstrap || !A.topic) {
    fprintf(stderr, "usage: latency --bootstrap B --topic T [--rate-mb 20] [--record-size 1024] "
                    "[--warmup 5] [--duration 20] [--linger-ms 1]\n");
    return 2;
  }
  A.rate_mb = atof(flag(argc, argv, "--rate-mb", "20"));
  A.record_size = atoi(flag(argc, argv, "--record-size", "1024"));
  A.warmup = atof(flag(argc, argv, "--warmup", "5"));
  A.duration = atof(flag(argc, argv, "--duration", "20"));
  PRODUCER_CONF[1][1] = flag(argc, argv, "--linger-ms", "1");
  if (A.record_size < 8 || A.rate_mb <= 0 || A.duration <= 0) {
    fprintf(stderr, "latency: --record-size must be >= 8, --rate-mb and --duration > 0\n");
    return 2;
  }

  char err[512], gid[64];
  rd_kafka_conf_t *c = conf_with(CONSUMER_CONF, sizeof CONSUMER_CONF / sizeof *CONSUMER_CONF);
  snprintf(gid, sizeof gid, "bench-latency-c-%d", (int)getpid());
  if (rd_kafka_conf_set(c, "group.id", gid, err, sizeof err) != RD_KAFKA_CONF_OK)
    die("config", err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
  if (!rk) die("consumer", err);
  rd_kafka_poll_set_consumer(rk);
  const struct rd_kafka_metadata *md;
  rd_kafka_topic_t *t = rd_kafka_topic_new(rk, A.topic, NULL);
  if (rd_kafka_metadata(rk, 0, t, &md, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0)
    die("consumer", "no metadata for the topic");
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(8);
  for (int i = 0; i < md->topics[0].partition_cnt; i++)
    rd_kafka_topic_partition_list_add(parts, A.topic, md->topics[0].partitions[i].id)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(t);
  if (rd_kafka_assign(rk, parts)) die("consumer", "assign failed");
  rd_kafka_topic_partition_list_destroy(parts);
  /* let the consumer connect and start fetching before the producer begins */
  for (double settle = mono_s() + 2; mono_s() < settle;) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (m) rd_kafka_message_destroy(m);
  }

  P.t_start_ns = now_ns() + 1000000000LL;
  int64_t win_lo = P.t_start_ns + (int64_t)(A.warmup * 1e9);
  int64_t win_hi = win_lo + (int64_t)(A.duration * 1e9);
  P.t_end_ns = win_hi;
  pthread_t prod;
  pthread_create(&prod, NULL, producer_main, NULL);

  long cap = (long)(A.rate_mb * 1e6 / A.record_size * A.duration * 1.1) + 1024, n = 0;
  int64_t *lat = malloc(sizeof(int64_t) * cap);
  long received = 0;
  double window_bytes = 0, hard_deadline = mono_s() + 1 + A.warmup + A.duration + 120;
  double after_done = 0;
  for (;;) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 50);
    int64_t now = now_ns();
    if (m) {
      if (!m->err && m->len >= 8) {
        const unsigned char *v = m->payload;
        int64_t ts = 0;
        for (int i = 0; i < 8; i++) ts = (int64_t)(((uint64_t)ts << 8) | v[i]);
        received++;
        if (ts >= win_lo && ts < win_hi && n < cap) {
          lat[n++] = now - ts;
          window_bytes += m->len;
        }
      }
      rd_kafka_message_destroy(m);
    }
    if (mono_s() > hard_deadline) {
      printf("{\"error\": \"timed out: %ld records received, producer %s\"}\n", received,
             atomic_load(&P.done) ? "done" : "not done");
      return 1;
    }
    if (atomic_load(&P.done)) {
      if (after_done == 0) after_done = mono_s() + 10;
      if (received >= atomic_load(&P.sent) || mono_s() > after_done) break;
    }
  }
  pthread_join(prod, NULL);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);

  long sent = atomic_load(&P.sent), errors = atomic_load(&P.errors);
  if (n == 0) {
    printf("{\"error\": \"no record sent in the measurement window arrived (%ld sent, %ld received)\"}\n",
           sent, received);
    return 1;
  }
  qsort(lat, n, sizeof *lat, cmp_i64);
  printf("{\"sent\": %ld, \"received\": %ld, \"lost\": %ld, \"producer_errors\": %ld, "
         "\"measured\": %ld, \"window_mb_per_sec\": %.3f, \"target_mb_per_sec\": %g, "
         "\"p50_ms\": %.4f, \"p99_ms\": %.4f, \"p999_ms\": %.4f, \"max_ms\": %.4f, "
         "\"bytes\": %ld, \"producer_queue_p99_ms\": %.4f, \"produce_rtt_p99_ms\": %.4f, "
         "\"client\": \"librdkafka %s (C)\"}\n",
         sent, received, sent - received, errors, n, window_bytes / 1e6 / A.duration, A.rate_mb,
         pct(lat, n, 0.50), pct(lat, n, 0.99), pct(lat, n, 0.999), lat[n - 1] / 1e6,
         sent * (long)A.record_size, median_ms(P.queue_p99, P.stats),
         median_ms(P.rtt_p99, P.stats), rd_kafka_version_str());
  free(lat);
  return (sent == received && !errors) ? 0 : 1;
}
