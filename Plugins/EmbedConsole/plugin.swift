import Foundation
import PackagePlugin

/// Embeds the web console's static files (`Console/` in the target's directory) in the
/// target's code, so that the node serves them from its own binary: no resource bundle to
/// install beside it, nothing fetched at run time.
@main
struct EmbedConsole: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let console = target.directoryURL.appending(path: "Console")
        let names = try FileManager.default.contentsOfDirectory(atPath: console.path()).filter { !$0.hasPrefix(".") }.sorted()
        let inputs = names.map { console.appending(path: $0) }
        let output = context.pluginWorkDirectoryURL.appending(path: "ConsoleFiles.swift")
        return [
            .buildCommand(
                displayName: "Embedding the web console (\(names.count) files)",
                executable: try context.tool(named: "ConsoleEmbedder").url,
                arguments: [output.path()] + inputs.map { $0.path() },
                inputFiles: inputs,
                outputFiles: [output]
            )
        ]
    }
}
