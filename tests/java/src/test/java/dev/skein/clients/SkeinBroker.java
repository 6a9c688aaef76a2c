package dev.skein.clients;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * The release {@code skein} binary ({@code SKEIN_BIN}, default {@code target/release/skein} in
 * the repository) on ephemeral ports with a fresh temporary data directory. Its output goes
 * to {@code tests/java/target/skein-logs/NAME.log}.
 */
final class SkeinBroker implements AutoCloseable {
    static final Duration START_TIMEOUT = Duration.ofSeconds(30);
    static final Duration STOP_TIMEOUT = Duration.ofSeconds(30);
    private static final Pattern ANSI = Pattern.compile("\u001b\\[[0-9;]*[A-Za-z]");
    private static final Pattern KAFKA_ADDR = Pattern.compile("\\bkafka=\"?([^\\s\"]+)");

    private final Process process;
    private final Path dataDir;
    private final Path logFile;
    private final String bootstrap;
    private final List<String> lines = new ArrayList<>();
    private final List<Thread> readers = new ArrayList<>();

    static Path repo() {
        return Paths.get(System.getProperty("skein.repo", "../..")).toAbsolutePath().normalize();
    }

    static Path binary() {
        String bin = System.getenv("SKEIN_BIN");
        Path p = bin != null && !bin.isEmpty()
                ? Paths.get(bin) : repo().resolve("target/release/skein");
        return p.toAbsolutePath();
    }

    SkeinBroker(String name, List<String> sets) throws IOException, InterruptedException {
        Path bin = binary();
        if (!Files.isExecutable(bin)) {
            throw new IllegalStateException(
                    "skein binary not found at " + bin + " (set SKEIN_BIN or build it)");
        }
        dataDir = Files.createTempDirectory("skein-java-" + name + "-");
        Path logs = Paths.get("target", "skein-logs").toAbsolutePath();
        Files.createDirectories(logs);
        logFile = logs.resolve(name + ".log");
        List<String> cmd = new ArrayList<>(List.of(bin.toString(), "serve",
                "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                "--data-dir", dataDir.toString()));
        for (String kv : sets) {
            cmd.add("--set");
            cmd.add(kv);
        }
        ProcessBuilder pb = new ProcessBuilder(cmd);
        // SKEIN_* variables around the test run (SKEIN_BIN) must not configure the broker.
        pb.environment().keySet().removeIf(k -> k.startsWith("SKEIN_"));
        pb.environment().put("RUST_LOG", "info");
        pb.environment().put("RUST_BACKTRACE", "1");
        pb.environment().put("NO_COLOR", "1");
        pb.redirectInput(ProcessBuilder.Redirect.PIPE);
        note("--- " + String.join(" ", cmd));
        process = pb.start();
        process.getOutputStream().close();

        CountDownLatch started = new CountDownLatch(1);
        String[] found = new String[1];
        readers.add(reader(process.getErrorStream(), "stderr", started, found));
        readers.add(reader(process.getInputStream(), "stdout", null, null));

        long deadline = System.nanoTime() + START_TIMEOUT.toNanos();
        while (!started.await(50, TimeUnit.MILLISECONDS)) {
            if (!process.isAlive()) {
                joinReaders();
                throw new IllegalStateException("skein exited with " + process.exitValue()
                        + " before its start line\n" + log());
            }
            if (System.nanoTime() > deadline) {
                process.destroyForcibly().waitFor();
                joinReaders();
                throw new IllegalStateException("no 'skein started' line within "
                        + START_TIMEOUT.toSeconds() + "s\n" + log());
            }
        }
        bootstrap = found[0];
    }

    private Thread reader(java.io.InputStream in, String tag, CountDownLatch started,
                          String[] found) {
        Thread t = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(
                    new InputStreamReader(in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    line = ANSI.matcher(line).replaceAll("");
                    note("[" + tag + "] " + line);
                    if (started != null && started.getCount() > 0
                            && line.contains("skein started")) {
                        Matcher m = KAFKA_ADDR.matcher(line);
                        if (m.find()) {
                            found[0] = m.group(1);
                            started.countDown();
                        }
                    }
                }
            } catch (IOException e) {
                note("[" + tag + "] read error: " + e);
            }
        }, "skein-" + tag);
        t.setDaemon(true);
        t.start();
        return t;
    }

    private synchronized void note(String line) {
        lines.add(line);
    }

    synchronized String log() {
        return String.join("\n", lines);
    }

    String bootstrap() {
        return bootstrap;
    }

    boolean isAlive() {
        return process.isAlive();
    }

    private void joinReaders() throws InterruptedException {
        for (Thread t : readers) {
            t.join(5000);
        }
    }

    /**
     * Stops the broker with SIGTERM and writes its log. Returns a problem to report (the
     * broker died early, did not exit cleanly, or panicked), or null.
     */
    String stop() throws IOException, InterruptedException {
        String problem = null;
        if (!process.isAlive()) {
            problem = "skein died during the tests with exit status " + process.exitValue();
        } else {
            // SIGTERM through the handle: Process.destroy() would also close our ends of the
            // broker's stdout and stderr, and its shutdown logging would then hit a broken pipe.
            process.toHandle().destroy();
            if (!process.waitFor(STOP_TIMEOUT.toSeconds(), TimeUnit.SECONDS)) {
                process.destroyForcibly().waitFor();
                problem = "skein did not exit within " + STOP_TIMEOUT.toSeconds()
                        + "s of SIGTERM";
            } else if (process.exitValue() != 0) {
                problem = "skein exited with " + process.exitValue() + " after SIGTERM";
            }
        }
        joinReaders();
        String log = log();
        if (problem == null && log.contains("panicked")) {
            problem = "skein logged a panic";
        }
        try (PrintWriter w = new PrintWriter(Files.newBufferedWriter(logFile))) {
            w.println(log);
        }
        try (Stream<Path> walk = Files.walk(dataDir)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
        return problem == null ? null : problem + " (log: " + logFile + ")";
    }

    @Override
    public void close() throws Exception {
        if (process.isAlive()) {
            stop();
        }
    }
}
