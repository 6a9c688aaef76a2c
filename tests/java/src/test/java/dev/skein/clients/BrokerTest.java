package dev.skein.clients;

import static org.junit.jupiter.api.Assertions.fail;

import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Base of every test class: one Skein per class, the shared reference broker, and
 * {@link #targets()} for {@code @MethodSource}, so each test runs on both.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@ExtendWith(Outcomes.class)
abstract class BrokerTest {
    /**
     * Settings given to both brokers (scripts/test and {@link Reference} start the reference
     * broker with the same): no wait before the first rebalance of a new classic group.
     */
    static final List<String> BROKER_SETS = List.of("group.initial.rebalance.delay.ms=0");

    private SkeinBroker skein;
    private Target skeinTarget;

    @BeforeAll
    void startSkein() {
        try {
            skein = new SkeinBroker(getClass().getSimpleName(), BROKER_SETS);
            skeinTarget = Target.available(Target.Kind.SKEIN, skein.bootstrap());
        } catch (Exception e) {
            skeinTarget = Target.missing(Target.Kind.SKEIN, e.getMessage(), true);
        }
    }

    @AfterAll
    void stopSkein() throws Exception {
        if (skein != null) {
            String problem = skein.stop();
            if (problem != null) {
                fail(problem);
            }
        }
    }

    /** Both brokers, Skein first. */
    Stream<Target> targets() {
        return Stream.of(skeinTarget, Reference.target());
    }
}
