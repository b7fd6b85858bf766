import ArgumentParser
import SecureConfServer

/// Lists the OSC_* variables the node understands (used to keep deployment files honest).
struct Variables: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the OSC_* environment variables a node reads, with their meaning.")

    @Flag(help: "Print names only.") var namesOnly = false

    func run() {
        for (name, meaning) in NodeConfiguration.variables {
            print(namesOnly ? name : "\(name)\t\(meaning)")
        }
    }
}
