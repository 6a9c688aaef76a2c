package dev.skein.clients;

import static org.junit.jupiter.api.Assertions.fail;

import org.junit.jupiter.api.Assumptions;

/**
 * One broker a parameterised test runs against: Skein (started by the test class) or the
 * reference Apache Kafka (from KAFKA_REFERENCE_BOOTSTRAP, or started by {@link Reference}).
 */
public final class Target {
    public enum Kind { SKEIN, KAFKA }

    private final Kind kind;
    private final String bootstrap;
    private final String unavailable;
    private final boolean unavailableIsFailure;

    private Target(Kind kind, String bootstrap, String unavailable, boolean failure) {
        this.kind = kind;
        this.bootstrap = bootstrap;
        this.unavailable = unavailable;
        this.unavailableIsFailure = failure;
    }

    static Target available(Kind kind, String bootstrap) {
        return new Target(kind, bootstrap, null, false);
    }

    /** A broker that could not be had: its tests skip, or fail when {@code failure}. */
    static Target missing(Kind kind, String why, boolean failure) {
        return new Target(kind, null, why, failure);
    }

    public boolean isSkein() {
        return kind == Kind.SKEIN;
    }

    /** The bootstrap address; skips (or fails) the test if this broker is not available. */
    public String bootstrap() {
        if (unavailable != null) {
            if (unavailableIsFailure) {
                fail(name() + " broker unavailable: " + unavailable);
            }
            Assumptions.abort(name() + " broker unavailable: " + unavailable);
        }
        return bootstrap;
    }

    /**
     * Skips the running test on Skein only, naming what Skein does not do yet. On the
     * reference broker the test carries on and must pass.
     */
    public void skipOnSkein(String reason) {
        Assumptions.assumeFalse(isSkein(), "not on Skein yet: " + reason);
    }

    public String name() {
        return kind == Kind.SKEIN ? "skein" : "kafka";
    }

    @Override
    public String toString() {
        return name();
    }
}
