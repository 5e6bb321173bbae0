// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title ISignatureTransfer
/// @notice The signature-transfer half of Uniswap Permit2: the structs, errors, event and functions that x402
///         facilitators, proxies and signers rely on. Names, type strings and selectors are Permit2's own.
interface ISignatureTransfer {
    /// @notice A token and the most that may be taken of it.
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    /// @notice The signed message for one token; the spender is `msg.sender` and is not passed in.
    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice Where the spender sends the tokens, and how many (at most the permitted amount).
    struct SignatureTransferDetails {
        address to;
        uint256 requestedAmount;
    }

    /// @notice The signed message for several tokens under one nonce.
    struct PermitBatchTransferFrom {
        TokenPermissions[] permitted;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice The block timestamp is past the signed deadline.
    error SignatureExpired(uint256 signatureDeadline);
    /// @notice The nonce was used or invalidated before.
    error InvalidNonce();
    /// @notice The requested amount is above the permitted amount `maxAmount`.
    error InvalidAmount(uint256 maxAmount);
    /// @notice A batch permit and its transfer details have different lengths.
    error LengthMismatch();
    /// @notice An EOA signature is neither 65 nor 64 (EIP-2098) bytes long.
    error InvalidSignatureLength();
    /// @notice The signature recovers to no address.
    error InvalidSignature();
    /// @notice The signature recovers to an address other than the owner.
    error InvalidSigner();
    /// @notice The owner is a contract and its EIP-1271 check did not return the magic value.
    error InvalidContractSignature();

    /// @notice `owner` set the bits of `mask` in its nonce bitmap word `word`.
    event UnorderedNonceInvalidation(address indexed owner, uint256 word, uint256 mask);

    /// @notice The EIP-712 domain separator: name "Permit2", no version, this chain, this address.
    function DOMAIN_SEPARATOR() external view returns (bytes32);

    /// @notice Word `wordPos` of `owner`'s unordered nonce bitmap; nonce n is bit `n & 0xff` of word `n >> 8`.
    function nonceBitmap(address owner, uint256 wordPos) external view returns (uint256);

    /// @notice Moves tokens with a signed `PermitTransferFrom`.
    function permitTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes calldata signature
    ) external;

    /// @notice Moves tokens with a signed `PermitWitnessTransferFrom` that also covers the caller's witness.
    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external;

    /// @notice Moves several tokens with a signed `PermitBatchTransferFrom`.
    function permitTransferFrom(
        PermitBatchTransferFrom calldata permit,
        SignatureTransferDetails[] calldata transferDetails,
        address owner,
        bytes calldata signature
    ) external;

    /// @notice Moves several tokens with a signed `PermitBatchWitnessTransferFrom`.
    function permitWitnessTransferFrom(
        PermitBatchTransferFrom calldata permit,
        SignatureTransferDetails[] calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external;

    /// @notice Marks the nonces in `mask` of word `wordPos` as used for the caller.
    function invalidateUnorderedNonces(uint256 wordPos, uint256 mask) external;
}

/// @title Permit2
/// @notice A Permit2-compatible signature-transfer contract for local chains and tests, where the real Permit2
///         bytecode is not available. It accepts exactly the signatures the canonical Permit2 accepts.
/// @dev Keeps no constructor state and no immutables: the domain separator is computed from `address(this)`
///      and `block.chainid` on every call, so the runtime code can be copied to the canonical address
///      0x000000000022D473030F116dDEE9F6B43aC78BA3. Owners approve this contract on the token once; transfers
///      go through the token's `transferFrom`.
contract Permit2 is ISignatureTransfer {
    using SafeERC20 for IERC20;

    bytes32 private constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,uint256 chainId,address verifyingContract)");
    bytes32 private constant _NAME_HASH = keccak256("Permit2");
    bytes32 private constant _TOKEN_PERMISSIONS_TYPEHASH = keccak256("TokenPermissions(address token,uint256 amount)");
    bytes32 private constant _PERMIT_TRANSFER_FROM_TYPEHASH = keccak256(
        "PermitTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline)"
        "TokenPermissions(address token,uint256 amount)"
    );
    bytes32 private constant _PERMIT_BATCH_TRANSFER_FROM_TYPEHASH = keccak256(
        "PermitBatchTransferFrom(TokenPermissions[] permitted,address spender,uint256 nonce,uint256 deadline)"
        "TokenPermissions(address token,uint256 amount)"
    );
    // A witness type string completes these stubs, e.g. "Witness witness)TokenPermissions(...)Witness(...)".
    string private constant _PERMIT_WITNESS_STUB =
        "PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,";
    string private constant _PERMIT_BATCH_WITNESS_STUB =
        "PermitBatchWitnessTransferFrom(TokenPermissions[] permitted,address spender,uint256 nonce,uint256 deadline,";
    // EIP-2098: the top bit of `vs` carries the parity of v; the rest is s.
    bytes32 private constant _S_MASK = 0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff;

    /// @inheritdoc ISignatureTransfer
    mapping(address owner => mapping(uint256 wordPos => uint256 bits)) public nonceBitmap;

    /// @inheritdoc ISignatureTransfer
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, _NAME_HASH, block.chainid, address(this)));
    }

    /// @inheritdoc ISignatureTransfer
    function permitTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes calldata signature
    ) external {
        bytes32 structHash = keccak256(
            abi.encode(
                _PERMIT_TRANSFER_FROM_TYPEHASH,
                _hashPermissions(permit.permitted),
                msg.sender,
                permit.nonce,
                permit.deadline
            )
        );
        _transferSingle(permit, transferDetails, owner, structHash, signature);
    }

    /// @inheritdoc ISignatureTransfer
    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external {
        bytes32 typeHash = keccak256(abi.encodePacked(_PERMIT_WITNESS_STUB, witnessTypeString));
        bytes32 structHash = keccak256(
            abi.encode(typeHash, _hashPermissions(permit.permitted), msg.sender, permit.nonce, permit.deadline, witness)
        );
        _transferSingle(permit, transferDetails, owner, structHash, signature);
    }

    /// @inheritdoc ISignatureTransfer
    function permitTransferFrom(
        PermitBatchTransferFrom calldata permit,
        SignatureTransferDetails[] calldata transferDetails,
        address owner,
        bytes calldata signature
    ) external {
        bytes32 structHash = keccak256(
            abi.encode(
                _PERMIT_BATCH_TRANSFER_FROM_TYPEHASH,
                _hashPermissionsList(permit.permitted),
                msg.sender,
                permit.nonce,
                permit.deadline
            )
        );
        _transferBatch(permit, transferDetails, owner, structHash, signature);
    }

    /// @inheritdoc ISignatureTransfer
    function permitWitnessTransferFrom(
        PermitBatchTransferFrom calldata permit,
        SignatureTransferDetails[] calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external {
        bytes32 typeHash = keccak256(abi.encodePacked(_PERMIT_BATCH_WITNESS_STUB, witnessTypeString));
        bytes32 structHash = keccak256(
            abi.encode(
                typeHash, _hashPermissionsList(permit.permitted), msg.sender, permit.nonce, permit.deadline, witness
            )
        );
        _transferBatch(permit, transferDetails, owner, structHash, signature);
    }

    /// @inheritdoc ISignatureTransfer
    function invalidateUnorderedNonces(uint256 wordPos, uint256 mask) external {
        nonceBitmap[msg.sender][wordPos] |= mask;
        emit UnorderedNonceInvalidation(msg.sender, wordPos, mask);
    }

    function _transferSingle(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 structHash,
        bytes calldata signature
    ) private {
        if (block.timestamp > permit.deadline) revert SignatureExpired(permit.deadline);
        if (transferDetails.requestedAmount > permit.permitted.amount) revert InvalidAmount(permit.permitted.amount);
        _consumeNonce(owner, permit.nonce);
        _checkSignature(owner, _digest(structHash), signature);
        IERC20(permit.permitted.token).safeTransferFrom(owner, transferDetails.to, transferDetails.requestedAmount);
    }

    function _transferBatch(
        PermitBatchTransferFrom calldata permit,
        SignatureTransferDetails[] calldata transferDetails,
        address owner,
        bytes32 structHash,
        bytes calldata signature
    ) private {
        if (block.timestamp > permit.deadline) revert SignatureExpired(permit.deadline);
        if (permit.permitted.length != transferDetails.length) revert LengthMismatch();
        _consumeNonce(owner, permit.nonce);
        _checkSignature(owner, _digest(structHash), signature);
        for (uint256 i = 0; i < transferDetails.length; ++i) {
            TokenPermissions calldata permitted = permit.permitted[i];
            uint256 requested = transferDetails[i].requestedAmount;
            if (requested > permitted.amount) revert InvalidAmount(permitted.amount);
            // A zero request lets the spender skip a token it was permitted but does not need.
            if (requested != 0) IERC20(permitted.token).safeTransferFrom(owner, transferDetails[i].to, requested);
        }
    }

    /// @dev Flips bit `nonce & 0xff` of word `nonce >> 8`; reverts if it was already set.
    function _consumeNonce(address owner, uint256 nonce) private {
        uint256 bit = uint256(1) << (nonce & 0xff);
        uint256 word = nonceBitmap[owner][nonce >> 8];
        if (word & bit != 0) revert InvalidNonce();
        nonceBitmap[owner][nonce >> 8] = word | bit;
    }

    function _digest(bytes32 structHash) private view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
    }

    function _hashPermissions(TokenPermissions calldata permitted) private pure returns (bytes32) {
        return keccak256(abi.encode(_TOKEN_PERMISSIONS_TYPEHASH, permitted.token, permitted.amount));
    }

    /// @dev EIP-712 encodes an array of structs as the hash of its members' concatenated struct hashes.
    function _hashPermissionsList(TokenPermissions[] calldata permitted) private pure returns (bytes32) {
        bytes32[] memory hashes = new bytes32[](permitted.length);
        for (uint256 i = 0; i < permitted.length; ++i) {
            hashes[i] = _hashPermissions(permitted[i]);
        }
        return keccak256(abi.encodePacked(hashes));
    }

    /// @dev An owner with code is asked through EIP-1271; any other owner must have signed with its key.
    function _checkSignature(address owner, bytes32 digest, bytes calldata signature) private view {
        if (owner.code.length != 0) {
            if (IERC1271(owner).isValidSignature(digest, signature) != IERC1271.isValidSignature.selector) {
                revert InvalidContractSignature();
            }
            return;
        }
        bytes32 r;
        bytes32 s;
        uint8 v;
        if (signature.length == 65) {
            r = bytes32(signature[0:32]);
            s = bytes32(signature[32:64]);
            v = uint8(signature[64]);
        } else if (signature.length == 64) {
            r = bytes32(signature[0:32]);
            bytes32 vs = bytes32(signature[32:64]);
            s = vs & _S_MASK;
            v = uint8(uint256(vs >> 255)) + 27;
        } else {
            revert InvalidSignatureLength();
        }
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert InvalidSignature();
        if (signer != owner) revert InvalidSigner();
    }
}
