package dev.skein.clients;

import java.util.Optional;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * Prints one line for every skipped or failed test with its reason, so the reasons are in
 * the build output and not only in target/surefire-reports.
 */
public final class Outcomes implements TestWatcher {
    private static String name(ExtensionContext context) {
        String cls = context.getTestClass().map(Class::getSimpleName).orElse("?");
        String method = context.getTestMethod().map(m -> m.getName()).orElse("?");
        return cls + "." + method + " [" + context.getDisplayName() + "]";
    }

    @Override
    public void testAborted(ExtensionContext context, Throwable cause) {
        System.out.println("SKIPPED " + name(context) + ": " + cause.getMessage());
    }

    @Override
    public void testFailed(ExtensionContext context, Throwable cause) {
        System.out.println("FAILED  " + name(context) + ": " + cause);
    }

    @Override
    public void testDisabled(ExtensionContext context, Optional<String> reason) {
        System.out.println("SKIPPED " + name(context) + ": " + reason.orElse("disabled"));
    }
}
