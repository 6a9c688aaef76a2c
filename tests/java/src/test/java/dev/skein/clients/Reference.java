package dev.skein.clients;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The reference Apache Kafka broker, shared by the whole run. {@code KAFKA_REFERENCE_BOOTSTRAP}
 * names a running one (scripts/test starts it). Without it the suite starts its own with
 * scripts/kafka-reference and stops it when the JVM exits; if that fails, the Kafka half of
 * every test is skipped, unless {@code SKEIN_REQUIRE_REFERENCE=1} (CI), which makes it fail.
 */
final class Reference {
    private static Target target;

    private Reference() {}

    static synchronized Target target() {
        if (target == null) {
            target = resolve();
        }
        return target;
    }

    private static Target resolve() {
        boolean required = "1".equals(System.getenv("SKEIN_REQUIRE_REFERENCE"));
        String env = System.getenv("KAFKA_REFERENCE_BOOTSTRAP");
        if (env != null && !env.isBlank()) {
            return Target.available(Target.Kind.KAFKA, env.trim());
        }
        if (required) {
            return Target.missing(Target.Kind.KAFKA,
                    "SKEIN_REQUIRE_REFERENCE=1 but KAFKA_REFERENCE_BOOTSTRAP is not set", true);
        }
        try {
            return startOwn();
        } catch (Exception e) {
            return Target.missing(Target.Kind.KAFKA,
                    "KAFKA_REFERENCE_BOOTSTRAP is unset and scripts/kafka-reference failed: " + e,
                    false);
        }
    }

    private static Target startOwn() throws Exception {
        Path script = SkeinBroker.repo().resolve("scripts/kafka-reference");
        Path dir = Path.of(System.getProperty("java.io.tmpdir"),
                "skein-java-reference-" + ProcessHandle.current().pid());
        Process p = new ProcessBuilder(List.of(script.toString(), "start", "--dir", dir.toString(),
                "--set", "group.initial.rebalance.delay.ms=0"))
                .redirectError(ProcessBuilder.Redirect.INHERIT)
                .start();
        String bootstrap = null;
        try (BufferedReader r = new BufferedReader(
                new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while ((line = r.readLine()) != null) {
                if (line.startsWith("bootstrap=")) {
                    bootstrap = line.substring("bootstrap=".length()).trim();
                }
            }
        }
        if (!p.waitFor(300, TimeUnit.SECONDS) || p.exitValue() != 0 || bootstrap == null) {
            throw new IllegalStateException("scripts/kafka-reference start did not succeed");
        }
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                Process stop = new ProcessBuilder(
                        List.of(script.toString(), "stop", "--dir", dir.toString()))
                        .inheritIO().start();
                if (stop.waitFor(90, TimeUnit.SECONDS) && stop.exitValue() == 0) {
                    try (var walk = java.nio.file.Files.walk(dir)) {
                        walk.sorted(java.util.Comparator.reverseOrder())
                                .forEach(f -> f.toFile().delete());
                    }
                }
            } catch (Exception ignored) {
                // The JVM is exiting; the directory names the broker for manual cleanup.
            }
        }));
        return Target.available(Target.Kind.KAFKA, bootstrap);
    }
}
