package dev.skein.commerce.app;

import java.util.Collection;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.event.EventListener;
import org.springframework.core.env.Environment;
import org.springframework.kafka.config.KafkaListenerEndpointRegistry;
import org.springframework.kafka.listener.MessageListenerContainer;
import org.springframework.stereotype.Component;

/**
 * Logs {@code commerce ready: <profile>} once: for the api when the app is up (topics created), for a
 * consumer profile once every listener container (main, retry and DLT) has partitions assigned.
 * The run script and the acceptance test wait for this line.
 */
@Component
public class ReadyReporter {
    private static final Logger log = LoggerFactory.getLogger(ReadyReporter.class);
    private final KafkaListenerEndpointRegistry registry;
    private final Environment env;

    public ReadyReporter(KafkaListenerEndpointRegistry registry, Environment env) {
        this.registry = registry;
        this.env = env;
    }

    @EventListener(ApplicationReadyEvent.class)
    public void onReady() {
        String profile = String.join(",", env.getActiveProfiles());
        Thread t = new Thread(() -> {
            while (!allAssigned()) {
                try {
                    Thread.sleep(100);
                } catch (InterruptedException e) {
                    return;
                }
            }
            log.info("commerce ready: {}", profile);
        }, "ready-reporter");
        t.setDaemon(true);
        t.start();
    }

    private boolean allAssigned() {
        for (MessageListenerContainer c : registry.getAllListenerContainers()) {
            Collection<?> assigned = c.getAssignedPartitions();
            if (c.isRunning() && (assigned == null || assigned.isEmpty())) {
                return false;
            }
        }
        return true;
    }
}
